"""Every environment variable the appliance reads, in one `BaseSettings`.

Read once where a process starts (`EmbedEnv()` in the CLI, the gateway, supervise, the watchdog)
and passed down; nothing below those entry points reads `os.environ` for its settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmbedEnv(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBED_", extra="ignore", frozen=True)

    runtime_dir: Path | None = None  # the compiled repository + appliance.json; set by `serve` for its children
    model_root: Path | None = None  # relative `[[models]] path`s resolve here, else next to embed.toml
    cache_dir: Path | None = None  # kept between starts: int8 twins, fidelity verdicts, OpenVINO's cache
    xdg_runtime_dir: Path | None = Field(default=None, validation_alias="XDG_RUNTIME_DIR")

    @property
    def cache_root(self) -> Path:
        return self.cache_dir or Path.home() / ".cache" / "embed-appliance"

    @property
    def quantize_cache_dir(self) -> Path:
        """int8 twins (precision = "int8"), keyed by the weights' sha256."""
        return self.cache_root / "quantized"

    @property
    def engine_cache_dir(self) -> Path:
        """OpenVINO's compiled-model cache (CACHE_DIR): a restart does not recompile."""
        return self.cache_root / "openvino"

    def serve_runtime_dir(self) -> Path:
        """Where `appliance serve` compiles to unless told: $EMBED_RUNTIME_DIR, else a per-user folder."""
        if self.runtime_dir is not None:
            return self.runtime_dir
        return (self.xdg_runtime_dir or Path("/tmp")) / f"embed-appliance-{os.getuid()}"

    def required_runtime_dir(self) -> Path:
        if self.runtime_dir is None:
            raise SystemExit("appliance: EMBED_RUNTIME_DIR is not set (it is set by `appliance serve`)")
        return self.runtime_dir
