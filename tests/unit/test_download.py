"""`appliance download` against the fake Hugging Face Hub of harness/fakehub.py (HF_ENDPOINT)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.models.download import REPO_FILES, STAGING_DIR, DownloadError, download_model
from appliance.spec.modelinfo import JINA_FILES
from harness.fakehub import COMMIT, REPO, FakeHub, serve_fake_hub


@pytest.fixture
def fake_hub(tiny_jina_dir: Path) -> Iterator[FakeHub]:
    with serve_fake_hub(tiny_jina_dir) as hub:
        yield hub


@pytest.fixture(autouse=True)
def _quiet_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # huggingface_hub's own cache stays in the test's folder
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _run_cli(hub: FakeHub, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh process: HF_ENDPOINT and HF_TOKEN are read as a user sets them."""
    env = dict(os.environ, HF_ENDPOINT=hub.hub_url, HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1")
    env.pop("HF_TOKEN", None)
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "appliance.cli", "download", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_download_cli_lays_six_files_out_flat_and_verifies_them(fake_hub: FakeHub, tmp_path: Path,
                                                                  tiny_jina_dir: Path) -> None:
    target = tmp_path / "model"
    result = _run_cli(fake_hub, REPO, "--to", str(target))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(JINA_FILES)  # flat, staging removed
    for name in JINA_FILES:
        assert (target / name).read_bytes() == (tiny_jina_dir / name).read_bytes(), name
    assert f"is commit {COMMIT}" in result.stdout and f"--revision {COMMIT}" in result.stdout
    assert "verify: ok:" in result.stdout


def test_download_pins_every_file_to_the_commit_the_revision_resolved_to(fake_hub: FakeHub, tmp_path: Path) -> None:
    result = download_model(REPO, tmp_path / "model", endpoint=fake_hub.hub_url)
    assert result.commit == COMMIT
    resolves = [r for r in fake_hub.requests if "/resolve/" in r.path]
    # one look-up of `main`, everything after it at the commit: all six files come from one revision
    assert [r.path for r in resolves if "/resolve/main/" in r.path] == [f"/{REPO}/resolve/main/config.json"]
    assert {r.path.split("/resolve/")[1].split("/")[0] for r in resolves[1:]} == {COMMIT}
    assert len(fake_hub.gets("")) == 6


def test_download_sends_hf_token_from_the_environment(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.gated = True
    refused = _run_cli(fake_hub, REPO, "--to", str(tmp_path / "a"))
    assert refused.returncode == 1
    assert "is gated" in refused.stderr and "HF_TOKEN" in refused.stderr

    accepted = _run_cli(fake_hub, REPO, "--to", str(tmp_path / "b"), token="hf_test_token")
    assert accepted.returncode == 0, accepted.stderr
    hub_requests = [r for r in fake_hub.requests if "/resolve/" in r.path]
    assert all(r.headers.get("authorization") == "Bearer hf_test_token" for r in hub_requests[-12:])


def test_download_resumes_a_dropped_connection_with_a_range_request(fake_hub: FakeHub, tmp_path: Path,
                                                                     tiny_jina_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub writes what it received in 10 MB chunks: all of the tiny model's 3.5 MB would
    # sit in one unwritten chunk when the connection drops. With 64 KB chunks the drop lands mid-file.
    from huggingface_hub import constants

    chunk = 64 * 1024
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    data_path = "/blobs/onnx/model.onnx_data"
    cut = 16 * chunk
    assert len(fake_hub.files["onnx/model.onnx_data"]) > 2 * cut
    fake_hub.drop_after[data_path] = cut

    download_model(REPO, tmp_path / "model", endpoint=fake_hub.hub_url)

    attempts = fake_hub.gets(data_path)
    assert len(attempts) == 2
    assert "range" not in {k.lower() for k in attempts[0].headers}
    assert attempts[1].headers.get("Range") == f"bytes={cut}-"  # only the missing part was asked for
    assert (tmp_path / "model" / "model.onnx_data").read_bytes() == (tiny_jina_dir / "model.onnx_data").read_bytes()


def test_download_again_fetches_only_missing_or_wrong_files(fake_hub: FakeHub, tmp_path: Path,
                                                            tiny_jina_dir: Path) -> None:
    target = tmp_path / "model"
    download_model(REPO, target, endpoint=fake_hub.hub_url)
    (target / "model.onnx_data").unlink()
    tokenizer = target / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b"<unk>", b"<UNK>"))  # same size, other bytes
    fake_hub.requests.clear()

    result = download_model(REPO, target, endpoint=fake_hub.hub_url)

    assert sorted(result.fetched) == ["model.onnx_data", "tokenizer.json"]
    assert sorted(result.kept) == ["config.json", "model.onnx", "special_tokens_map.json", "tokenizer_config.json"]
    assert len(fake_hub.gets("")) == 2
    assert tokenizer.read_bytes() == (tiny_jina_dir / "tokenizer.json").read_bytes()
    assert not (target / STAGING_DIR).exists()


def test_download_names_the_missing_revision(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="has no revision `v9`.*--revision"):
        download_model(REPO, tmp_path / "model", revision="v9", endpoint=fake_hub.hub_url)


def test_download_of_an_unknown_repository_says_which_one_to_use(fake_hub: FakeHub, tmp_path: Path) -> None:
    result = _run_cli(fake_hub, "someone/not-there", "--to", str(tmp_path / "model"))
    assert result.returncode == 1
    assert "repository someone/not-there not found" in result.stderr
    assert "jinaai/jina-embeddings-v3" in result.stderr


def test_download_of_a_repository_without_the_onnx_files_says_what_it_needs(fake_hub: FakeHub,
                                                                             tmp_path: Path) -> None:
    del fake_hub.files["onnx/model.onnx_data"]
    with pytest.raises(DownloadError, match="lacks a file the appliance needs.*onnx/model.onnx_data"):
        download_model(REPO, tmp_path / "model", endpoint=fake_hub.hub_url)


def test_download_reports_an_unreachable_endpoint_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"cannot download from http://127\.0\.0\.1:9: .*run the same command"):
        download_model(REPO, tmp_path / "model", endpoint="http://127.0.0.1:9")


def test_repo_files_map_onto_the_six_files_the_appliance_serves() -> None:
    assert sorted(REPO_FILES.values()) == sorted(JINA_FILES)
