"""embed.toml + model folder -> Triton repository (config.pbtxt, model.py) + appliance.json.

Golden files pin config.pbtxt. To rewrite them after an intended change, run with
`UPDATE_GOLDEN=1`, then read the diff before committing it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import msgspec
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from appliance.compile import compiler
from appliance.compile.compiler import MODEL_PY, available_cpus, compile_file, compile_spec
from appliance.errors import ConfigError
from appliance.settings import COMPILED_FILE, CompiledAppliance, read_compiled
from appliance.spec.loader import parse_spec

GOLDEN = Path(__file__).resolve().parent / "golden"
JINA_FILES = [
    "model.onnx",
    "model.onnx_data",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
]
JINA_TASKS = [
    "retrieval.query",
    "retrieval.passage",
    "separation",
    "classification",
    "text-matching",
]


def model_toml(path: Path | str, name: str = "m", extra: str = "") -> str:
    return f'[[models]]\nname = "{name}"\npath = "{path}"\n{extra}'


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "embed.toml"
    config.write_text(text, encoding="utf-8")
    return config


def compile_text(tmp_path: Path, text: str) -> CompiledAppliance:
    return compile_file(write_config(tmp_path / "cfg", text), tmp_path / "out")


def compile_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        compile_text(tmp_path, text)
    return info.value


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def parse_pbtxt(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


# --- model folder problems ----------------------------------------------------------------------


def test_missing_model_onnx_data_names_models_0_path_the_file_and_the_remedy(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    model = copy_model(tiny_jina_dir, tmp_path / "model")
    (model / "model.onnx_data").unlink()
    error = compile_error(tmp_path, model_toml(model))
    assert error.key == "models[0].path"
    assert f"missing file {model / 'model.onnx_data'}" in error.problem
    assert "tokenizer.json" not in error.problem  # only what is really missing
    assert "model.onnx_data" in error.fix and "README" in error.fix
    assert "fix:" in str(error)


def test_every_missing_file_is_listed_not_only_the_first(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    model = copy_model(tiny_jina_dir, tmp_path / "model")
    (model / "tokenizer.json").unlink()
    (model / "special_tokens_map.json").unlink()
    error = compile_error(tmp_path, model_toml(model))
    assert str(model / "tokenizer.json") in error.problem
    assert str(model / "special_tokens_map.json") in error.problem


def test_missing_file_remedy_for_a_sentence_transformer_folder_does_not_prescribe_jina_files(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    model = tmp_path / "minilm"
    model.mkdir()
    for name in ("model.onnx", "config.json", "tokenizer_config.json"):  # no tokenizer.json
        (model / name).symlink_to((demo_model_dir / name).resolve())
    error = compile_error(tmp_path, model_toml(model))
    assert error.key == "models[0].path"
    assert str(model / "tokenizer.json") in error.problem
    assert "jina" not in error.fix.lower(), error.fix


def test_an_empty_folder_lists_all_six_jina_files_and_how_to_get_them(tmp_path: Path) -> None:
    empty = tmp_path / "jina-embeddings-v3" / "1"
    empty.mkdir(parents=True)
    error = compile_error(tmp_path, model_toml(empty))
    assert error.key == "models[0].path"
    for name in JINA_FILES:
        assert f"missing file {empty / name}" in error.problem
    assert "README" in error.fix


def test_truncated_model_onnx_data_is_reported_with_both_sizes(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    model = copy_model(tiny_jina_dir, tmp_path / "model")
    data = model / "model.onnx_data"
    full = data.stat().st_size
    data.write_bytes(data.read_bytes()[: full // 2])
    error = compile_error(tmp_path, model_toml(model))
    assert error.key == "models[0].path"
    assert f"{data} is truncated" in error.problem
    assert str(full // 2) in error.problem and str(full) in error.problem


def test_a_corrupt_model_onnx_is_reported_as_unreadable(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    model = copy_model(tiny_jina_dir, tmp_path / "model")
    (model / "model.onnx").write_bytes(b"not a protobuf")
    error = compile_error(tmp_path, model_toml(model))
    assert error.key == "models[0].path"
    assert "not a readable ONNX model" in error.problem


def test_a_path_that_is_not_a_folder_is_named(tmp_path: Path) -> None:
    error = compile_error(tmp_path, model_toml(tmp_path / "nowhere"))
    assert error.key == "models[0].path"
    assert f"{tmp_path / 'nowhere'} is not a directory" in error.problem


def test_the_error_names_the_index_of_the_failing_model(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    text = model_toml(tiny_jina_dir, "good") + model_toml(tmp_path / "nowhere", "bad")
    assert compile_error(tmp_path, text).key == "models[1].path"


def test_declaring_a_jina_folder_as_sentence_transformer_is_rejected(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    error = compile_error(
        tmp_path, model_toml(tiny_jina_dir, extra='kind = "sentence-transformer"\n')
    )
    assert error.key == "models[0].path"
    assert "task_id" in error.problem


# --- tasks, dimensions, max_tokens --------------------------------------------------------------


def test_compile_rejects_unknown_task_when_task_not_in_lora_adaptations(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    error = compile_error(
        tmp_path, model_toml(tiny_jina_dir, extra='tasks = ["retrieval.query", "summarize"]\n')
    )
    assert error.key == "models[0].tasks"
    assert "`summarize`" in error.problem
    for task in JINA_TASKS:
        assert task in error.fix


def test_compile_rejects_an_empty_task_list(tmp_path: Path, tiny_jina_dir: Path) -> None:
    assert (
        compile_error(tmp_path, model_toml(tiny_jina_dir, extra="tasks = []\n")).key
        == "models[0].tasks"
    )


def test_compile_rejects_default_task_that_is_not_among_the_served_tasks(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    extra = 'tasks = ["retrieval.query", "retrieval.passage"]\ndefault_task = "text-matching"\n'
    error = compile_error(tmp_path, model_toml(tiny_jina_dir, extra=extra))
    assert error.key == "models[0].default_task"
    assert "text-matching" in error.problem
    assert "retrieval.query" in error.fix and "retrieval.passage" in error.fix


def test_compile_rejects_dimensions_the_model_does_not_support(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    error = compile_error(tmp_path, model_toml(tiny_jina_dir, extra="dimensions = [32, 48]\n"))
    assert error.key == "models[0].dimensions"
    assert "48" in error.problem and "[32, 64]" in error.fix


def test_compile_rejects_max_tokens_above_the_model_limit(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    error = compile_error(tmp_path, model_toml(tiny_jina_dir, extra="max_tokens = 8193\n"))
    assert error.key == "models[0].max_tokens"
    assert "8192" in error.problem and "8192" in error.fix


def test_compile_accepts_max_tokens_equal_to_the_model_limit(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    compiled = compile_text(tmp_path, model_toml(tiny_jina_dir, extra="max_tokens = 8192\n"))
    assert compiled.gateway.models[0].max_tokens == 8192


def test_compile_rejects_tasks_on_a_sentence_transformer_model(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    error = compile_error(
        tmp_path, model_toml(demo_model_dir, extra='tasks = ["retrieval.query"]\n')
    )
    assert error.key == "models[0].tasks"
    assert "sentence-transformer" in error.problem


def test_compile_rejects_default_task_on_a_sentence_transformer_naming_default_task(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    error = compile_error(
        tmp_path, model_toml(demo_model_dir, extra='default_task = "retrieval.query"\n')
    )
    assert error.key == "models[0].default_task"


def test_compile_rejects_matryoshka_dimensions_on_a_sentence_transformer(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    error = compile_error(tmp_path, model_toml(demo_model_dir, extra="dimensions = [128]\n"))
    assert error.key == "models[0].dimensions"
    assert "[384]" in error.fix


# --- kind detection and resolved defaults -------------------------------------------------------


def test_kind_is_detected_from_each_folder(
    tmp_path: Path, tiny_jina_dir: Path, demo_model_dir: Path
) -> None:
    compiled = compile_text(
        tmp_path, model_toml(tiny_jina_dir, "jina") + model_toml(demo_model_dir, "minilm")
    )
    kinds = {m.name: (m.kind, m.output_name) for m in compiled.gateway.models}
    assert kinds == {
        "jina": ("jina-v3", "text_embeds"),
        "minilm": ("sentence-transformer", "last_hidden_state"),
    }


def test_tiny_jina_defaults_resolve_from_its_folder(tmp_path: Path, tiny_jina_dir: Path) -> None:
    model = compile_text(tmp_path, model_toml(tiny_jina_dir)).gateway.models[0]
    assert model.tasks == JINA_TASKS
    assert model.task_ids == {task: i for i, task in enumerate(JINA_TASKS)}
    assert model.default_task == "retrieval.query"  # the reference design's default
    assert model.max_tokens == 8192
    assert model.dimensions == [32, 64]
    assert model.hidden_size == 64
    assert model.pad_id == 1
    assert model.folder == str(tiny_jina_dir.resolve())


def test_task_instructions_come_from_config_json(tmp_path: Path, tiny_jina_dir: Path) -> None:
    expected = msgspec.json.decode((tiny_jina_dir / "config.json").read_bytes())[
        "task_instructions"
    ]
    model = compile_text(tmp_path, model_toml(tiny_jina_dir)).gateway.models[0]
    assert model.instructions == expected
    assert model.instructions["retrieval.query"].startswith("Represent the query")


def test_task_instructions_false_empties_every_instruction(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    model = compile_text(
        tmp_path, model_toml(tiny_jina_dir, extra="task_instructions = false\n")
    ).gateway.models[0]
    assert not any(model.instructions.get(task) for task in model.tasks)
    assert model.tasks == JINA_TASKS  # the tasks themselves stay


def test_a_task_subset_keeps_the_model_task_ids_and_defaults_to_its_first_task(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    extra = 'tasks = ["separation", "retrieval.passage"]\n'
    model = compile_text(tmp_path, model_toml(tiny_jina_dir, extra=extra)).gateway.models[0]
    assert model.tasks == ["separation", "retrieval.passage"]
    assert model.task_ids == {
        "separation": 2,
        "retrieval.passage": 1,
    }  # lora_adaptations index, not list position
    assert model.default_task == "separation"
    assert set(model.instructions) == {"separation", "retrieval.passage"}


def test_explicit_dimensions_are_sorted_and_deduplicated(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    model = compile_text(
        tmp_path, model_toml(tiny_jina_dir, extra="dimensions = [64, 32, 64]\n")
    ).gateway.models[0]
    assert model.dimensions == [32, 64]


def test_sentence_transformer_defaults_have_no_tasks_and_only_the_hidden_size(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    model = compile_text(tmp_path, model_toml(demo_model_dir)).gateway.models[0]
    assert model.tasks == [] and model.default_task is None and model.instructions == {}
    assert model.dimensions == [384] and model.hidden_size == 384


def test_default_max_tokens_ignores_the_padding_configured_in_tokenizer_json(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    # all-MiniLM's tokenizer.json pads every encoding to 128; sentence_bert_config.json says the
    # model is used at 256 tokens, two of which are [CLS] and [SEP].
    model = compile_text(tmp_path, model_toml(demo_model_dir)).gateway.models[0]
    assert model.max_tokens == 254


def test_without_sentence_bert_config_max_tokens_is_the_models_positions(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    folder = tmp_path / "minilm"
    folder.mkdir()
    for item in demo_model_dir.iterdir():
        if item.name != "sentence_bert_config.json":
            (folder / item.name).symlink_to(item.resolve())
    assert compile_text(tmp_path, model_toml(folder)).gateway.models[0].max_tokens == 510


def test_max_tokens_may_be_raised_above_sentence_bert_configs_length_up_to_the_positions(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    extra = "max_tokens = 510\n"
    assert compile_text(tmp_path, model_toml(demo_model_dir, extra=extra)).gateway.models[0].max_tokens == 510


def test_a_task_subset_without_retrieval_query_defaults_to_its_first_task(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    extra = 'tasks = ["text-matching", "retrieval.query"]\n'
    assert compile_text(tmp_path, model_toml(tiny_jina_dir, extra=extra)).gateway.models[0].default_task == (
        "retrieval.query"
    )


# --- presets ------------------------------------------------------------------------------------


def presets_of(compiled: CompiledAppliance) -> dict[str, tuple[str, str | None, bool]]:
    return {p.name: (p.model, p.task, p.automatic) for p in compiled.gateway.presets}


def test_every_jina_model_gets_one_preset_per_served_task(tmp_path: Path, tiny_jina_dir: Path) -> None:
    compiled = compile_text(tmp_path, model_toml(tiny_jina_dir, name="jina-v3"))
    assert presets_of(compiled) == {
        "jina-v3-query": ("jina-v3", "retrieval.query", True),
        "jina-v3-passage": ("jina-v3", "retrieval.passage", True),
        "jina-v3-separation": ("jina-v3", "separation", True),
        "jina-v3-classification": ("jina-v3", "classification", True),
        "jina-v3-text-matching": ("jina-v3", "text-matching", True),
    }


def test_automatic_presets_follow_the_served_tasks_and_can_be_switched_off(
    tmp_path: Path, tiny_jina_dir: Path, demo_model_dir: Path
) -> None:
    subset = model_toml(tiny_jina_dir, name="a", extra='tasks = ["retrieval.passage"]\n')
    off = model_toml(tiny_jina_dir, name="b", extra="task_presets = false\n")
    compiled = compile_text(tmp_path, subset + off + model_toml(demo_model_dir, name="minilm"))
    assert presets_of(compiled) == {"a-passage": ("a", "retrieval.passage", True)}


def test_declared_presets_fix_fields_and_replace_an_automatic_one_of_the_same_name(
    tmp_path: Path, tiny_jina_dir: Path, demo_model_dir: Path
) -> None:
    text = model_toml(tiny_jina_dir, name="jina") + model_toml(demo_model_dir, name="minilm") + (
        '[[presets]]\nname = "jina-query"\nmodel = "jina"\ntask = "retrieval.query"\ndimensions = 32\n'
        '[[presets]]\nname = "text-embedding-3-small"\nmodel = "minilm"\nencoding_format = "float"\n'
    )
    presets = {p.name: p for p in compile_text(tmp_path, text).gateway.presets}
    assert presets["jina-query"].dimensions == 32 and not presets["jina-query"].automatic
    small = presets["text-embedding-3-small"]
    assert (small.model, small.task, small.encoding_format, small.automatic) == ("minilm", None, "float", False)
    assert len(presets) == 6


@pytest.mark.parametrize(
    ("preset", "key", "says"),
    [
        ('name = "p"\nmodel = "nope"\n', "presets[0].model", "`nope` is not a served model"),
        ('name = "p"\nmodel = "jina"\ntask = "retrieval.qery"\n', "presets[0].task", "retrieval.qery"),
        ('name = "p"\nmodel = "minilm"\ntask = "retrieval.query"\n', "presets[0].task", "has no tasks"),
        ('name = "p"\nmodel = "jina"\ndimensions = 48\n', "presets[0].dimensions", "48"),
        ('name = "minilm"\nmodel = "jina"\n', "presets[0].name", "also a model's name"),
        ('name = "p"\nmodel = "jina"\n[[presets]]\nname = "p"\nmodel = "minilm"\n', "presets[1].name",
         "declared twice"),
        ('name = "p"\nmodel = "jina"\nencoding_format = "binary"\n', "presets[0].encoding_format", "binary"),
        ('name = "p"\nmodel = "jina"\ntsk = "x"\n', "presets[0].tsk", "unknown key"),
        ('name = "has space"\nmodel = "jina"\n', "presets[0].name", ""),
    ],
)
def test_bad_presets_stop_compilation_naming_the_key(
    tmp_path: Path, tiny_jina_dir: Path, demo_model_dir: Path, preset: str, key: str, says: str
) -> None:
    text = model_toml(tiny_jina_dir, name="jina") + model_toml(demo_model_dir, name="minilm") + "[[presets]]\n" + preset
    error = compile_error(tmp_path, text)
    assert error.key == key
    assert says in str(error)


def test_an_automatic_preset_that_clashes_with_a_model_name_is_an_error(
    tmp_path: Path, tiny_jina_dir: Path, demo_model_dir: Path
) -> None:
    error = compile_error(tmp_path, model_toml(tiny_jina_dir, name="m") + model_toml(demo_model_dir, name="m-query"))
    assert error.key == "models[0].task_presets"
    assert "task_presets = false" in error.fix


# --- threads ------------------------------------------------------------------------------------


def test_available_cpus_is_at_least_one_and_within_the_affinity_mask() -> None:
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cpus", "count", "threads"), [(8, 1, 8), (8, 2, 4), (8, 3, 2), (2, 4, 1)])
def test_default_threads_are_available_cpus_divided_by_instance_count(
    tmp_path: Path,
    tiny_jina_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    cpus: int,
    count: int,
    threads: int,
) -> None:
    monkeypatch.setattr(compiler, "available_cpus", lambda: cpus)
    compiled = compile_text(tmp_path, model_toml(tiny_jina_dir) + f"[instances]\ncount = {count}\n")
    assert compiled.gateway.threads_per_instance == threads
    assert compiled.gateway.instance_count == count
    config = parse_pbtxt((tmp_path / "out" / "triton" / "m" / "config.pbtxt").read_text())
    assert parameters(config)["intra_op_threads"] == str(threads)
    assert config.instance_group[0].count == count


def test_default_threads_use_this_machine_cpus(tmp_path: Path, tiny_jina_dir: Path) -> None:
    assert (
        compile_text(tmp_path, model_toml(tiny_jina_dir)).gateway.threads_per_instance
        == available_cpus()
    )


def test_explicit_threads_are_respected(
    tmp_path: Path, tiny_jina_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiler, "available_cpus", lambda: 8)
    compiled = compile_text(
        tmp_path, model_toml(tiny_jina_dir) + "[instances]\ncount = 2\nthreads = 3\n"
    )
    assert compiled.gateway.threads_per_instance == 3


# --- what is written ----------------------------------------------------------------------------


def test_output_holds_only_config_model_py_and_settings_never_the_weights(
    tmp_path: Path, tiny_jina_dir: Path, demo_model_dir: Path
) -> None:
    compile_text(tmp_path, model_toml(tiny_jina_dir, "jina") + model_toml(demo_model_dir, "minilm"))
    out = tmp_path / "out"
    assert files_under(out) == {
        COMPILED_FILE,
        "triton/jina/config.pbtxt",
        "triton/jina/1/model.py",
        "triton/minilm/config.pbtxt",
        "triton/minilm/1/model.py",
    }
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert (out / "triton/jina/1/model.py").read_bytes() == MODEL_PY.read_bytes()


def test_config_pbtxt_references_the_weights_in_place(tmp_path: Path, tiny_jina_dir: Path) -> None:
    compile_text(tmp_path, model_toml(tiny_jina_dir))
    config = parse_pbtxt((tmp_path / "out" / "triton" / "m" / "config.pbtxt").read_text())
    assert parameters(config)["model_dir"] == str(tiny_jina_dir.resolve())


def test_recompiling_removes_models_no_longer_declared(
    tmp_path: Path, tiny_jina_dir: Path, demo_model_dir: Path
) -> None:
    compile_text(tmp_path, model_toml(tiny_jina_dir, "jina") + model_toml(demo_model_dir, "minilm"))
    compile_text(tmp_path, model_toml(demo_model_dir, "minilm"))
    assert sorted(p.name for p in (tmp_path / "out" / "triton").iterdir()) == ["minilm"]


def test_a_failed_compile_leaves_the_previous_repository_untouched(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    compile_text(tmp_path, model_toml(tiny_jina_dir))
    before = (tmp_path / "out" / "triton" / "m" / "config.pbtxt").read_text()
    compile_error(tmp_path, model_toml(tiny_jina_dir, extra="max_tokens = 9000\n"))
    assert (tmp_path / "out" / "triton" / "m" / "config.pbtxt").read_text() == before


def test_appliance_json_round_trips_to_what_compile_returned(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    compiled = compile_text(
        tmp_path, model_toml(tiny_jina_dir) + "[server]\nport = 9123\ntriton_http_port = 9124\n"
    )
    assert read_compiled(tmp_path / "out") == compiled
    assert compiled.gateway.port == 9123
    assert compiled.gateway.triton_url == "127.0.0.1:9124"
    assert sorted(p.name for p in (tmp_path / "out" / "triton").iterdir()) == ["m"]
    assert compiled.triton.model_repository == str(tmp_path / "out" / "triton")


def test_plaintext_keys_are_hashed_and_never_written_to_the_runtime_dir(
    tmp_path: Path, tiny_jina_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBED_OPS_KEY", "ops-secret-value")
    secret = "plaintext-secret-7f3a"
    auth = (
        f'[auth]\nkeys = [{{ name = "ci", key = "{secret}" }}, '
        '{ name = "ops", env = "EMBED_OPS_KEY" }]\n'
    )
    with caplog.at_level(logging.WARNING):
        compiled = compile_text(tmp_path, model_toml(tiny_jina_dir) + auth)
    out = tmp_path / "out"
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    ci, ops = read_compiled(out).gateway.auth_keys
    assert (ci.name, ci.sha256, ci.key) == ("ci", hashlib.sha256(secret.encode()).hexdigest(), None)
    assert (ops.name, ops.env, ops.sha256) == (
        "ops",
        "EMBED_OPS_KEY",
        None,
    )  # resolved at gateway start
    assert compiled.gateway.auth_keys == [ci, ops]
    assert any("plaintext" in r.getMessage() and "ci" in r.getMessage() for r in caplog.records)


def test_compile_stops_when_an_env_key_is_not_set_naming_the_variable(
    tmp_path: Path, tiny_jina_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMBED_UNSET_KEY", raising=False)
    auth = '[auth]\nkeys = [{ name = "ops", env = "EMBED_UNSET_KEY" }]\n'
    with pytest.raises(ConfigError) as info:
        compile_text(tmp_path, model_toml(tiny_jina_dir) + auth)
    assert info.value.key == "auth.keys[0].env"
    assert "EMBED_UNSET_KEY" in str(info.value)


def test_no_auth_keys_compiles_with_an_open_api_warning(
    tmp_path: Path, tiny_jina_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        compiled = compile_text(tmp_path, model_toml(tiny_jina_dir))
    assert compiled.gateway.auth_keys == []
    assert any("open" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_relative_model_paths_resolve_against_the_embed_toml_folder(
    tmp_path: Path, tiny_jina_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMBED_MODEL_ROOT", raising=False)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "models").mkdir()
    (cfg / "models" / "tiny").symlink_to(tiny_jina_dir)
    compiled = compile_file(write_config(cfg, model_toml("models/tiny")), tmp_path / "out")
    assert compiled.gateway.models[0].folder == str(tiny_jina_dir.resolve())


def test_relative_model_paths_resolve_against_embed_model_root_when_set(
    tmp_path: Path, tiny_jina_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBED_MODEL_ROOT", str(tiny_jina_dir.parent))
    compiled = compile_text(tmp_path, model_toml(tiny_jina_dir.name))
    assert compiled.gateway.models[0].folder == str(tiny_jina_dir.resolve())


# --- config.pbtxt: structure and golden files ---------------------------------------------------

GOLDEN_CONFIGS = {
    "tiny-jina": (  # fp32 forced: `auto` depends on the CPU (tests/unit/test_engine_choice.py)
        "tiny_jina_dir",
        (
            'precision = "fp32"\n'
            "[batching]\nmax_batch_size = 32\npreferred_batch_sizes = [8, 16]\n"
            "max_queue_delay_us = 500\nmax_batch_tokens = 4096\n"
            "[instances]\ncount = 2\nthreads = 1\n"
        ),
    ),
    "all-minilm": ("demo_model_dir", "[instances]\nthreads = 2\n"),
}


def render_for_golden(
    tmp_path: Path, name: str, request: pytest.FixtureRequest
) -> tuple[str, Path]:
    fixture, extra = GOLDEN_CONFIGS[name]
    folder: Path = request.getfixturevalue(fixture)
    spec = parse_spec(model_toml(folder, name, extra))
    compile_spec(spec, tmp_path, tmp_path / "out")
    text = (tmp_path / "out" / "triton" / name / "config.pbtxt").read_text(encoding="utf-8")
    return text, folder.resolve()


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_config_pbtxt_matches_its_golden_file(
    tmp_path: Path, request: pytest.FixtureRequest, name: str
) -> None:
    text, folder = render_for_golden(tmp_path, name, request)
    assert str(folder) in text
    pinned = text.replace(str(folder), "<MODEL_DIR>").replace(os.environ["EMBED_CACHE_DIR"], "<CACHE_DIR>")
    golden = GOLDEN / f"{name}.pbtxt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(pinned, encoding="utf-8")
    assert pinned == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_golden_files_parse_as_triton_model_configs(name: str) -> None:
    config = parse_pbtxt((GOLDEN / f"{name}.pbtxt").read_text(encoding="utf-8"))
    assert config.name == name and config.backend == "python"


def test_jina_config_pbtxt_declares_the_ragged_python_backend_interface(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    text, folder = render_for_golden(tmp_path, "tiny-jina", request)
    config = parse_pbtxt(text)
    dtype = model_config_pb2.DataType
    assert config.backend == "python"
    assert config.max_batch_size == 32
    # Required inputs; optional ones (added by later features) are pinned by the golden file.
    inputs = {
        i.name: (i.data_type, list(i.dims), i.allow_ragged_batch)
        for i in config.input
        if not i.optional
    }
    assert inputs == {
        "INPUT_IDS": (dtype.TYPE_INT64, [-1], True),
        "LENGTHS": (dtype.TYPE_INT64, [1], False),
        "TASK_ID": (dtype.TYPE_INT64, [1], False),
    }
    outputs = {o.name: (o.data_type, list(o.dims)) for o in config.output}
    assert outputs == {"EMBEDDING": (dtype.TYPE_FP32, [64]), "NORM": (dtype.TYPE_FP32, [1])}
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    assert parameters(config) == {
        "engine": "onnxruntime",
        "engine_cache_dir": os.environ["EMBED_CACHE_DIR"] + "/openvino",
        "precision": "fp32",
        "intra_op_threads": "1",
        "kind": "jina-v3",
        "max_batch_tokens": "4096",
        "model_dir": str(folder),
        "output_name": "text_embeds",
        "pad_id": "1",
    }


def test_sentence_transformer_config_pbtxt_has_no_task_input(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    text, _ = render_for_golden(tmp_path, "all-minilm", request)
    config = parse_pbtxt(text)
    assert [i.name for i in config.input if not i.optional] == ["INPUT_IDS", "LENGTHS"]
    assert "TASK_ID" not in [i.name for i in config.input]
    assert {o.name: list(o.dims) for o in config.output} == {"EMBEDDING": [384], "NORM": [1]}
    assert config.HasField("dynamic_batching")
    assert parameters(config)["kind"] == "sentence-transformer"
    assert parameters(config)["output_name"] == "last_hidden_state"
    assert parameters(config)["pad_id"] == "0"


def test_by_default_triton_gets_no_queue_policy(tmp_path: Path, tiny_jina_dir: Path) -> None:
    """Any queue policy costs Triton's batcher its prefetching (tests/e2e/test_back_to_back.py)."""
    compile_text(tmp_path, "[limits]\nrequest_timeout_s = 2.5\n" + model_toml(tiny_jina_dir))
    config = parse_pbtxt((tmp_path / "out" / "triton" / "m" / "config.pbtxt").read_text())
    assert config.HasField("dynamic_batching") and not config.dynamic_batching.HasField("default_queue_policy")


@pytest.mark.parametrize(
    ("limits", "timeout_us", "queue_size"),
    [
        ("request_timeout_s = 2.5\ntriton_max_queue_size = 8\n", 2_500_000, 8),
        ("triton_queue_timeout_ms = 30000\n", 30_000_000, 0),  # 30 s in the queue, 60 s per request
        ("request_timeout_s = 2.5\ntriton_queue_timeout_ms = 30000\n", 2_500_000, 0),
        ("request_timeout_s = 2.5\ntriton_queue_timeout_ms = 400\n", 400_000, 0),
    ],
)
def test_no_request_waits_in_tritons_queue_longer_than_the_gateway_waits_for_it(
    tmp_path: Path, tiny_jina_dir: Path, limits: str, timeout_us: int, queue_size: int
) -> None:
    compile_text(tmp_path, f"[limits]\n{limits}" + model_toml(tiny_jina_dir))
    config = parse_pbtxt((tmp_path / "out" / "triton" / "m" / "config.pbtxt").read_text())
    policy = config.dynamic_batching.default_queue_policy
    assert policy.default_timeout_microseconds == timeout_us
    assert policy.max_queue_size == queue_size
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT


def test_precision_int8_serves_a_cached_int8_twin_of_the_folder_without_touching_the_source(
    tmp_path: Path, tiny_jina_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBED_CACHE_DIR", str(tmp_path / "cache"))
    before = sorted(p.name for p in tiny_jina_dir.iterdir())
    int8 = 'precision = "int8"\nmin_cosine = 0.9\n'  # random tiny weights: the real-weights bound is in test_quantize
    compiled = compile_text(tmp_path, model_toml(tiny_jina_dir, extra=int8))
    model = compiled.gateway.models[0]
    folder = Path(model.folder)
    assert (model.engine, model.precision) == ("onnxruntime", "int8")
    assert model.fidelity is not None and model.fidelity.threshold == 0.9
    assert folder.parent == (tmp_path / "cache" / "quantized").resolve()
    assert folder != tiny_jina_dir.resolve()
    pbtxt = (tmp_path / "out" / "triton" / "m" / "config.pbtxt").read_text()
    assert f'string_value: "{folder}"' in pbtxt
    quantized = onnx.load(str(folder / "model.onnx"))
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for node in quantized.graph.node)
    assert sorted(p.name for p in tiny_jina_dir.iterdir()) == before
    again = compile_text(tmp_path, model_toml(tiny_jina_dir, extra=int8))
    assert again.gateway.models[0].folder == str(folder)
    assert again.gateway.models[0].fidelity.cached  # type: ignore[union-attr]


def test_the_old_quantize_key_is_refused_naming_precision_as_its_replacement(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    error = compile_error(tmp_path, model_toml(tiny_jina_dir, extra='quantize = "int8"\n'))
    assert error.key == "models[0].quantize"
    assert 'precision = "int8"' in str(error)


def test_precision_rejects_an_unknown_scheme_naming_the_key(tmp_path: Path, tiny_jina_dir: Path) -> None:
    error = compile_error(tmp_path, model_toml(tiny_jina_dir, extra='precision = "int4"\n'))
    assert error.key == "models[0].precision"
