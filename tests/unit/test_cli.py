"""`python -m appliance.cli compile`: exit codes and messages, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EMBED_MODEL_ROOT"}
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_compile_with_an_unknown_key_exits_2_naming_the_key_and_the_fix(tmp_path: Path) -> None:
    config = write(
        tmp_path / "bad.toml", '[[models]]\nname = "m"\npath = "/m"\n[server]\nprot = 8080\n'
    )
    result = run_cli("compile", "--config", config, "--out", tmp_path / "D")
    assert result.returncode == 2, result.stderr
    assert "`server.prot`" in result.stderr
    assert "fix:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "D").exists()  # nothing is written for an invalid spec


def test_compile_with_a_missing_model_file_exits_2_naming_models_0_path(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name in (
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
    ):
        (model / name).symlink_to(tiny_jina_dir / name)  # everything but model.onnx_data
    config = write(tmp_path / "embed.toml", f'[[models]]\nname = "m"\npath = "{model}"\n')
    result = run_cli("compile", "--config", config, "--out", tmp_path / "D")
    assert result.returncode == 2, result.stderr
    assert "`models[0].path`" in result.stderr
    assert str(model / "model.onnx_data") in result.stderr
    assert "fix:" in result.stderr
    assert not (tmp_path / "D" / "triton").exists()


def test_compile_of_a_config_file_that_does_not_exist_exits_2_naming_it(tmp_path: Path) -> None:
    result = run_cli("compile", "--config", tmp_path / "nope.toml", "--out", tmp_path / "D")
    assert result.returncode == 2
    assert str(tmp_path / "nope.toml") in result.stderr
    assert "fix:" in result.stderr


def test_compile_of_a_good_config_exits_0_and_writes_the_repository_and_settings(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    config = write(
        tmp_path / "embed.toml",
        f'[[models]]\nname = "tiny"\npath = "{tiny_jina_dir}"\n[instances]\nthreads = 1\n',
    )
    out = tmp_path / "D"
    result = run_cli("compile", "--config", config, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "tiny" in result.stdout
    pbtxt = out / "triton" / "tiny" / "config.pbtxt"
    parsed = text_format.Parse(pbtxt.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    assert parsed.name == "tiny" and parsed.backend == "python"
    assert (out / "triton" / "tiny" / "1" / "model.py").is_file()
    settings = msgspec.json.decode((out / "appliance.json").read_bytes())
    assert [m["name"] for m in settings["gateway"]["models"]] == ["tiny"]
    assert sorted(p.name for p in (out / "triton").iterdir()) == ["tiny"]  # Triton serves its repository


def test_compile_without_out_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("compile", "--config", tmp_path / "embed.toml")
    assert result.returncode == 2
    assert "--out" in result.stderr
