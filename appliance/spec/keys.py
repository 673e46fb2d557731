"""`[auth] keys` -> (name, sha256 digest) pairs: inline keys hashed, `env =` keys read, digests decoded."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from appliance.errors import ConfigError
from appliance.spec.schema import ApiKeySpec

KeyDigests = tuple[tuple[str, bytes], ...]


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def resolve_keys(keys: list[ApiKeySpec], environ: Mapping[str, str] | None = None) -> KeyDigests:
    """The keys' digests; an `env =` key whose variable is unset stops start-up, naming it."""
    env = os.environ if environ is None else environ
    digests = []
    for i, entry in enumerate(keys):
        if entry.sha256 is not None:
            digests.append((entry.name, bytes.fromhex(entry.sha256)))
        elif entry.env is not None:
            value = env.get(entry.env)
            if not value:
                raise ConfigError(
                    f"auth.keys[{i}].env",
                    f"environment variable {entry.env} (key `{entry.name}`) is not set",
                    f"set {entry.env} in the environment (e.g. podman run -e {entry.env}=...)",
                )
            digests.append((entry.name, digest(value)))
        elif entry.key is not None:
            digests.append((entry.name, digest(entry.key)))
    return tuple(digests)
