"""`appliance verify`: one clear line per problem, each with its fix; exit 1 when any."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.cli import main
from appliance.models.verify import run_verify, verify_folder
from appliance.spec.modelinfo import JINA_FILES


@pytest.fixture
def folder(tiny_jina_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny jina model, free to break."""
    return Path(shutil.copytree(tiny_jina_dir, tmp_path / "model"))


def _problems(folder: Path) -> list[str]:
    return [str(p) for p in verify_folder(folder)[0]]


def _verify_cli(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(folder)])
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), err.splitlines(), out


def test_verify_accepts_a_complete_folder_after_running_a_text_through_it(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, errors, out = _verify_cli(folder, capsys)
    assert (code, errors) == (0, [])
    assert out.startswith(f"verify: ok: {folder}: six files")
    assert "text_embeds [1, 4, 64]" in out  # "Hello world" -> <s> Hello world </s>, tiny hidden size 64


def test_verify_gives_the_exact_remedy_for_a_missing_model_onnx_data(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "model.onnx_data").unlink()
    code, errors, _ = _verify_cli(folder, capsys)
    assert code == 1
    assert errors == [
        (f"verify: problem: missing {folder}/model.onnx_data: the 2.3 GB weights model.onnx refers to "
         "(the graph alone is useless) -- fix: run `appliance download jinaai/jina-embeddings-v3 "
         f"--to {folder}` (fetches only what is missing or wrong), or download "
         "https://huggingface.co/jinaai/jina-embeddings-v3/resolve/main/onnx/model.onnx_data "
         f"and save it as {folder}/model.onnx_data"),
        f"verify: 1 problem(s): {folder} cannot be served yet",
    ]


def test_verify_lists_every_missing_file_on_its_own_line(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("model.onnx", "tokenizer.json", "config.json"):
        (folder / name).unlink()
    assert run_verify(folder) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4
    assert "resolve/main/onnx/model.onnx " in lines[0]  # the graph comes from onnx/ on the model page
    assert "resolve/main/tokenizer.json " in lines[1]
    assert "resolve/main/config.json " in lines[2]


def test_verify_empty_folder_names_all_six_files(tmp_path: Path) -> None:
    problems = _problems(tmp_path)
    assert len(problems) == len(JINA_FILES)
    assert all(f"missing {tmp_path / name}" in line for name, line in zip(JINA_FILES, problems, strict=True))


def test_verify_spots_files_left_in_the_onnx_subfolder(folder: Path) -> None:
    (folder / "onnx").mkdir()
    for name in ("model.onnx", "model.onnx_data"):
        (folder / name).rename(folder / "onnx" / name)
    problems = _problems(folder)
    assert problems == [
        (f"model.onnx is at {folder}/onnx/model.onnx, not in {folder} -- fix: move it: "
         f"mv {folder}/onnx/model.onnx {folder}/model.onnx (the folder is flat)"),
        (f"model.onnx_data is at {folder}/onnx/model.onnx_data, not in {folder} -- fix: move it: "
         f"mv {folder}/onnx/model.onnx_data {folder}/model.onnx_data (the folder is flat)"),
    ]


def test_verify_recognises_a_git_lfs_pointer(folder: Path) -> None:
    (folder / "model.onnx_data").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 2271103408\n"
    )
    (problem,) = _problems(folder)
    assert "model.onnx_data is a Git LFS pointer (" in problem and "`git lfs pull`" in problem


def test_verify_recognises_a_saved_web_page(folder: Path) -> None:
    (folder / "tokenizer.json").write_text("<!DOCTYPE html>\n<html><body>jinaai/jina-embeddings-v3</body></html>")
    (problem,) = _problems(folder)
    assert "tokenizer.json is a web page" in problem and "resolve/main/tokenizer.json" in problem


@pytest.mark.parametrize("name", ["tokenizer_config.json", "special_tokens_map.json", "config.json"])
def test_verify_rejects_json_that_does_not_parse(folder: Path, name: str) -> None:
    (folder / name).write_text('{"truncated": ')
    (problem,) = _problems(folder)
    assert f"{folder / name} is not valid JSON" in problem


def test_verify_rejects_an_empty_file(folder: Path) -> None:
    (folder / "special_tokens_map.json").write_bytes(b"")
    assert _problems(folder) == [
        (f"{folder}/special_tokens_map.json is empty -- fix: run `appliance download jinaai/jina-embeddings-v3 "
         f"--to {folder}` (fetches only what is missing or wrong), or download "
         "https://huggingface.co/jinaai/jina-embeddings-v3/resolve/main/special_tokens_map.json "
         f"and save it as {folder}/special_tokens_map.json")
    ]


def test_verify_rejects_a_config_of_another_model(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    del config["lora_adaptations"]
    (folder / "config.json").write_text(json.dumps(config))
    (problem,) = _problems(folder)
    assert "has no `lora_adaptations`: not jina-embeddings-v3's config.json" in problem


def test_verify_reports_truncated_weights_with_their_sizes(folder: Path) -> None:
    data = folder / "model.onnx_data"
    full = data.stat().st_size
    data.write_bytes(data.read_bytes()[: full // 2])
    (problem,) = _problems(folder)
    assert f"is truncated: {full // 2} bytes, the graph needs {full}" in problem
    assert "appliance download" in problem and "interrupted download" in problem


def test_verify_runs_the_weights_and_catches_garbage_of_the_right_size(folder: Path) -> None:
    data = folder / "model.onnx_data"
    data.write_bytes(b"\xff" * data.stat().st_size)  # every float32 is NaN
    (problem,) = _problems(folder)
    assert "text_embeds for a short text has shape [1, 4, 64] (finite: False)" in problem


def test_verify_rejects_an_onnx_graph_with_another_interface(folder: Path) -> None:
    weight = numpy_helper.from_array(np.zeros((8, 4), dtype=np.float32), "emb")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "input_ids"], ["last_hidden_state"])],
        "plain-encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", 4])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph), str(folder / "model.onnx"))
    problems = _problems(folder)
    assert len(problems) == 2
    assert "model.onnx has no input `task_id`: not a jina-v3 export" in problems[0]
    assert "model.onnx has no output `text_embeds`" in problems[1]
    assert all("onnx/model.onnx_data from https://huggingface.co/jinaai/jina-embeddings-v3/tree/main/onnx" in p
               for p in problems)


def test_verify_reports_an_unreadable_onnx_file(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(b"\x08\x01garbage that is not a protobuf")
    (problem,) = _problems(folder)
    assert "model.onnx is not a readable ONNX model" in problem


def test_verify_reports_a_tokenizer_that_does_not_load(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "NoSuchModel"}}')
    (problem,) = _problems(folder)
    assert f"{folder}/tokenizer.json does not load" in problem


def test_verify_catches_a_tokenizer_from_another_model(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    (problem,) = _problems(folder)
    assert "but config.json's vocab_size is 5: tokenizer and model come from different models" in problem


def test_verify_of_something_that_is_not_a_folder(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path / "nope")
    assert problem.startswith(f"{tmp_path / 'nope'} is not a directory")
