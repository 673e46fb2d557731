"""Bearer API keys, stored as sha256 digests and compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.errors import AuthenticationError
from appliance.spec.keys import KeyDigests, digest, resolve_keys
from appliance.spec.schema import ApiKeySpec


@dataclass(frozen=True)
class KeyRing:
    """Named key digests. Empty means the API is open."""

    digests: KeyDigests

    @classmethod
    def from_specs(cls, keys: list[ApiKeySpec], environ: Mapping[str, str] | None = None) -> KeyRing:
        return cls(resolve_keys(keys, environ))

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
        presented = digest(token.strip())
        match = None
        for name, key_digest in self.digests:  # no early exit: time does not depend on which key matched
            if hmac.compare_digest(presented, key_digest):
                match = name
        if match is None:
            raise AuthenticationError("invalid API key")
        return match
