"""embed.toml -> EmbedSpec: every problem is a ConfigError naming the TOML key and the fix."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from appliance.errors import ConfigError
from appliance.spec.loader import load_spec, parse_spec
from appliance.spec.schema import (
    ApiKeySpec,
    BatchingSpec,
    EmbedSpec,
    InstancesSpec,
    LimitsSpec,
    ModelSpec,
    ServerSpec,
)

MODEL = '[[models]]\nname = "m"\npath = "/models/m"\n'
SHA = "a" * 64


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_spec(text)
    return info.value


def field_names(struct: type[msgspec.Struct]) -> list[str]:
    return [f.name for f in msgspec.structs.fields(struct)]


def assert_lists_valid_keys(error: ConfigError, struct: type[msgspec.Struct]) -> None:
    assert "valid keys here:" in error.fix
    listed = error.fix.split("valid keys here:", 1)[1]
    for name in field_names(struct):
        assert name in listed, (name, error.fix)


# --- unknown keys -------------------------------------------------------------------------------


def test_unknown_top_level_key_is_named_and_the_fix_lists_the_top_level_keys() -> None:
    error = config_error("modles = 1\n" + MODEL)
    assert error.key == "modles"
    assert "`modles`" in str(error) and "unknown key" in str(error)
    assert "fix:" in str(error)
    assert_lists_valid_keys(error, EmbedSpec)


def test_unknown_key_in_server_is_named_server_dot_key_and_the_fix_lists_server_keys() -> None:
    error = config_error(MODEL + "[server]\nprot = 8080\n")
    assert error.key == "server.prot"
    assert "`server.prot`" in str(error)
    assert_lists_valid_keys(error, ServerSpec)
    assert "max_batch_size" not in error.fix  # only the keys of [server]


def test_unknown_key_in_first_model_is_named_with_its_array_index() -> None:
    error = config_error('[[models]]\nnmae = "m"\nname = "m"\npath = "/m"\n')
    assert error.key == "models[0].nmae"
    assert "`models[0].nmae`" in str(error)
    assert_lists_valid_keys(error, ModelSpec)


def test_unknown_key_in_second_model_is_named_with_index_one() -> None:
    error = config_error(MODEL + '[[models]]\nname = "n"\npath = "/n"\ndimension = [32]\n')
    assert error.key == "models[1].dimension"
    assert_lists_valid_keys(error, ModelSpec)


def test_unknown_key_in_batching_instances_and_limits_is_named_with_its_table() -> None:
    assert config_error(MODEL + "[batching]\nmax_batch = 8\n").key == "batching.max_batch"
    assert config_error(MODEL + "[instances]\nthread = 2\n").key == "instances.thread"
    assert config_error(MODEL + "[limits]\nmax_inputs = 2\n").key == "limits.max_inputs"


def test_unknown_key_in_an_auth_key_entry_is_named_and_lists_the_entry_keys() -> None:
    error = config_error(MODEL + '[auth]\nkeys = [{ name = "a", sha = "x" }]\n')
    assert error.key == "auth.keys[0].sha"
    assert_lists_valid_keys(error, ApiKeySpec)


# --- bad values ---------------------------------------------------------------------------------


def test_max_batch_size_zero_is_rejected_naming_the_key_and_the_lower_bound() -> None:
    error = config_error(MODEL + "[batching]\nmax_batch_size = 0\n")
    assert error.key == "batching.max_batch_size"
    assert ">= 1" in error.problem
    assert "fix:" in str(error)


def test_max_batch_size_as_a_string_is_rejected_naming_the_key_and_the_expected_type() -> None:
    error = config_error(MODEL + '[batching]\nmax_batch_size = "8"\n')
    assert error.key == "batching.max_batch_size"
    assert "`int`" in error.problem and "`str`" in error.problem


def test_port_above_65535_is_rejected_naming_server_port() -> None:
    error = config_error(MODEL + "[server]\nport = 70000\n")
    assert error.key == "server.port"
    assert "65535" in error.problem


def test_bad_value_inside_a_list_is_named_with_its_index() -> None:
    error = config_error(MODEL + "[batching]\npreferred_batch_sizes = [4, 0]\n")
    assert error.key == "batching.preferred_batch_sizes[1]"


def test_unknown_model_kind_is_rejected_naming_the_model_key() -> None:
    error = config_error('[[models]]\nname = "m"\npath = "/m"\nkind = "bert"\n')
    assert error.key == "models[0].kind"
    assert "bert" in error.problem


def test_model_name_with_a_space_is_rejected_naming_the_name_key() -> None:
    assert config_error('[[models]]\nname = "my model"\npath = "/m"\n').key == "models[0].name"


def test_malformed_sha256_is_rejected_naming_the_entry_key() -> None:
    error = config_error(MODEL + '[auth]\nkeys = [{ name = "a", sha256 = "abc" }]\n')
    assert error.key == "auth.keys[0].sha256"


def test_models_written_as_a_single_table_is_rejected_naming_models() -> None:
    error = config_error('[models]\nname = "m"\npath = "/m"\n')
    assert error.key == "models"
    assert "array" in error.problem


# --- required keys and cross-field rules --------------------------------------------------------


def test_missing_model_path_is_named_as_models_0_path() -> None:
    error = config_error('[[models]]\nname = "m"\n')
    assert error.key == "models[0].path"
    assert "missing" in error.problem
    assert "fix:" in str(error)


def test_missing_models_table_is_named_as_models() -> None:
    assert config_error("[server]\nport = 9000\n").key == "models"


def test_an_empty_models_list_is_rejected() -> None:
    error = config_error("models = []\n")
    assert error.key == "models"
    assert "[[models]]" in error.fix


def test_duplicate_model_names_are_rejected_naming_the_second_one() -> None:
    error = config_error(MODEL + '[[models]]\nname = "m"\npath = "/other"\n')
    assert error.key == "models[1].name"
    assert "`m`" in error.problem and "unique" in error.fix


def test_preferred_batch_size_above_max_batch_size_is_rejected() -> None:
    error = config_error(
        MODEL + "[batching]\nmax_batch_size = 8\npreferred_batch_sizes = [4, 16]\n"
    )
    assert error.key == "batching.preferred_batch_sizes"
    assert "16" in error.problem and "8" in error.problem


def test_preferred_batch_size_equal_to_max_batch_size_is_accepted() -> None:
    spec = parse_spec(MODEL + "[batching]\nmax_batch_size = 8\npreferred_batch_sizes = [4, 8]\n")
    assert spec.batching.preferred_batch_sizes == [4, 8]


def test_two_services_on_the_same_port_are_rejected_naming_the_second() -> None:
    error = config_error(MODEL + "[server]\nport = 8000\n")
    assert error.key == "server.triton_http_port"
    assert "server.port" in error.problem


def test_auth_key_with_none_of_sha256_env_key_is_rejected_naming_the_entry() -> None:
    error = config_error(MODEL + '[auth]\nkeys = [{ name = "a" }]\n')
    assert error.key == "auth.keys[0]"
    assert "none" in error.problem
    assert "exactly one" in error.fix


def test_auth_key_with_two_of_sha256_env_key_is_rejected_naming_the_entry() -> None:
    error = config_error(
        MODEL
        + f'[auth]\nkeys = [{{ name = "a", sha256 = "{SHA}" }}, '
        + '{ name = "b", env = "K", key = "p" }]\n'
    )
    assert error.key == "auth.keys[1]"
    assert "env" in error.problem and "key" in error.problem
    assert "exactly one" in error.fix


def test_auth_key_names_must_be_unique() -> None:
    error = config_error(
        MODEL
        + f'[auth]\nkeys = [{{ name = "a", sha256 = "{SHA}" }}, {{ name = "a", env = "K" }}]\n'
    )
    assert error.key == "auth.keys[1].name"


def test_each_kind_of_auth_key_is_accepted_alone() -> None:
    spec = parse_spec(
        MODEL
        + f'[auth]\nkeys = [{{ name = "h", sha256 = "{SHA}" }}, {{ name = "e", env = "API_KEY" }}, '
        '{ name = "p", key = "plain" }]\n'
    )
    assert [(k.name, k.sha256, k.env, k.key) for k in spec.auth.keys] == [
        ("h", SHA, None, None),
        ("e", None, "API_KEY", None),
        ("p", None, None, "plain"),
    ]


# --- syntax and files ---------------------------------------------------------------------------


def test_invalid_toml_syntax_is_a_config_error_with_the_line() -> None:
    error = config_error(MODEL + "[server\nport = 1\n")
    assert "not valid TOML" in error.problem
    assert "line 4" in error.problem
    assert "fix:" in str(error)


def test_load_spec_names_the_file_in_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "embed.toml"
    path.write_text("[[models]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(path) in info.value.problem


def test_load_spec_of_a_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(path) in info.value.problem
    assert "--config" in info.value.fix


def test_load_spec_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "embed.toml"
    path.write_text(MODEL + "[server]\nport = 9090\n", encoding="utf-8")
    spec = load_spec(path)
    assert spec.server.port == 9090 and spec.models[0].path == "/models/m"


# --- defaults -----------------------------------------------------------------------------------


def test_omitted_tables_take_their_documented_defaults() -> None:
    spec = parse_spec(MODEL)
    assert spec.server == ServerSpec(
        host="0.0.0.0",
        port=8080,
        triton_host="127.0.0.1",
        triton_http_port=8000,
        triton_grpc_port=8001,
        triton_metrics_port=8002,
        log_level="info",
    )
    assert spec.batching == BatchingSpec(
        max_batch_size=64, preferred_batch_sizes=[], max_queue_delay_us=0, max_batch_tokens=None
    )
    assert spec.instances == InstancesSpec(count=1, threads=0)
    assert spec.limits == LimitsSpec(
        max_inputs_per_request=2048, max_tokens_per_request=300_000, max_body_bytes=16 * 1024 * 1024
    )
    assert spec.auth.keys == []


def test_triton_listens_on_loopback_by_default() -> None:
    assert parse_spec(MODEL).server.triton_host == "127.0.0.1"


def test_model_defaults_leave_folder_dependent_values_unresolved() -> None:
    model = parse_spec(MODEL).models[0]
    assert model == ModelSpec(name="m", path="/models/m")
    assert model.kind is None and model.tasks is None and model.dimensions is None
    assert model.max_tokens is None and model.default_task is None
    assert model.task_instructions is True


def test_parsed_spec_is_frozen() -> None:
    spec = parse_spec(MODEL)
    with pytest.raises(AttributeError):
        spec.server = ServerSpec(port=1)  # type: ignore[misc]


def test_the_shipped_embed_toml_is_valid_and_mentions_every_key_of_the_schema() -> None:
    from appliance.spec import schema

    repo = Path(__file__).resolve().parents[2]
    text = (repo / "embed.toml").read_text(encoding="utf-8")
    parse_spec(text)
    tables = [schema.ServerSpec, schema.ModelSpec, schema.BatchingSpec, schema.InstancesSpec,
              schema.LimitsSpec, schema.CacheSpec, schema.ApiKeySpec]
    undocumented = [f"{t.__name__}.{f.name}" for t in tables for f in msgspec.structs.fields(t)
                    if f.name not in text]
    assert not undocumented, f"embed.toml does not document: {undocumented}"
