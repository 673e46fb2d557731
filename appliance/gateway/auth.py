"""Bearer API keys, stored as sha256 digests and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from appliance.errors import AuthenticationError, ConfigError
from appliance.spec.schema import ApiKeySpec


@dataclass(frozen=True)
class KeyRing:
    """Named key digests. Empty means the API is open."""

    digests: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_specs(cls, keys: list[ApiKeySpec], environ: dict[str, str] | None = None) -> KeyRing:
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
                digests.append((entry.name, _digest(value)))
            elif entry.key is not None:
                digests.append((entry.name, _digest(entry.key)))
        return cls(tuple(digests))

    @property
    def open(self) -> bool:
        return not self.digests

    def check(self, authorization: str | None) -> str | None:
        """The key's name for a valid `Bearer` header; raise `AuthenticationError` otherwise."""
        if self.open:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("missing API key: send `Authorization: Bearer <key>`")
        presented = _digest(token.strip())
        match = None
        for name, digest in self.digests:  # no early exit: time does not depend on which key matched
            if hmac.compare_digest(presented, digest):
                match = name
        if match is None:
            raise AuthenticationError("invalid API key")
        return match


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()
