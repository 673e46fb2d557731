"""Load embed.toml into an `EmbedSpec`, turning every problem into a `ConfigError`.

Errors name the key as it is written in TOML (`batching.max_batch_size`,
`models[0].name`) and say how to fix it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from appliance.errors import ConfigError, split_msgspec_error
from appliance.spec.schema import ApiKeySpec, Base, EmbedSpec

_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def load_spec(path: Path) -> EmbedSpec:
    """Read and validate an embed.toml file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "(file)", f"{path} does not exist", "pass --config with the path of your embed.toml"
        ) from None
    return parse_spec(text, source=str(path))


def parse_spec(text: str, *, source: str = "embed.toml") -> EmbedSpec:
    """Validate embed.toml text; raise `ConfigError` naming the key and the fix."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            "(syntax)", f"{source} is not valid TOML: {exc}", "fix the TOML syntax at that line"
        ) from None
    try:
        spec = msgspec.convert(raw, EmbedSpec)
    except msgspec.ValidationError as exc:
        raise _config_error(str(exc)) from None
    _check_cross_fields(spec)
    return spec


def _config_error(message: str) -> ConfigError:
    detail, path = split_msgspec_error(message)
    where = path or ""
    if unknown := _UNKNOWN_RE.match(detail):
        key = _join(where, unknown.group("field"))
        if where.startswith("models[") and unknown.group("field") == "quantize":
            return ConfigError(
                key,
                "`quantize` was replaced by `precision`",
                'write precision = "int8" instead (quantize = "none" is precision = "fp32")',
            )
        valid = ", ".join(_fields_at(where))
        return ConfigError(key, "unknown key", f"remove it or correct its spelling; valid keys here: {valid}")
    if missing := _MISSING_RE.match(detail):
        key = _join(where, missing.group("field"))
        return ConfigError(key, "required key is missing", "add it (see the comments in the shipped embed.toml)")
    return ConfigError(where or "(top level)", detail, "set a value of the expected type and range")


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _fields_at(toml_key: str) -> list[str]:
    """The valid keys of the table at `toml_key`, for the 'did you mean' hint."""
    struct: type[Base] = EmbedSpec
    for part in re.sub(r"\[\d+\]", "", toml_key).split(".") if toml_key else []:
        field = next(f for f in msgspec.structs.fields(struct) if f.name == part)
        struct = _struct_in(field.type)
    return [f.name for f in msgspec.structs.fields(struct)]


def _struct_in(annotation: Any) -> type[Base]:
    if isinstance(annotation, type) and issubclass(annotation, Base):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _struct_in(arg)
        if found is not Base:
            return found
    return Base


def _check_cross_fields(spec: EmbedSpec) -> None:
    if not spec.models:
        raise ConfigError("models", "no model is declared", "add a [[models]] table with `name` and `path`")
    seen: set[str] = set()
    for i, model in enumerate(spec.models):
        if model.name in seen:
            raise ConfigError(
                f"models[{i}].name", f"`{model.name}` is declared twice", "give every model a unique name"
            )
        seen.add(model.name)
    batching = spec.batching
    for size in batching.preferred_batch_sizes:
        if size > batching.max_batch_size:
            raise ConfigError(
                "batching.preferred_batch_sizes",
                f"{size} is larger than batching.max_batch_size ({batching.max_batch_size})",
                "use sizes <= max_batch_size or raise max_batch_size",
            )
    ports = {
        "server.port": spec.server.port,
        "server.triton_http_port": spec.server.triton_http_port,
        "server.triton_grpc_port": spec.server.triton_grpc_port,
        "server.triton_metrics_port": spec.server.triton_metrics_port,
    }
    by_port: dict[int, str] = {}
    for key, port in ports.items():
        if port in by_port:
            raise ConfigError(key, f"port {port} is also used by {by_port[port]}", "give each service its own port")
        by_port[port] = key
    _check_keys(spec.auth.keys)


def _check_keys(keys: list[ApiKeySpec]) -> None:
    names: set[str] = set()
    for i, entry in enumerate(keys):
        given = [k for k in ("sha256", "env", "key") if getattr(entry, k) is not None]
        if len(given) != 1:
            raise ConfigError(
                f"auth.keys[{i}]",
                f"key `{entry.name}` sets {', '.join(given) or 'none'} of sha256/env/key",
                'set exactly one: sha256 = "<hex digest>" (recommended), env = "VAR_NAME", or key = "plaintext"',
            )
        if entry.name in names:
            raise ConfigError(f"auth.keys[{i}].name", f"`{entry.name}` is used twice", "give every key a unique name")
        names.add(entry.name)
