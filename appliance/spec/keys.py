"""Secrets of `[auth]`: keys -> (name, sha256 digest) pairs (inline keys hashed, `env =` keys read,
digests decoded), and the rate-limit store's URL (inline or from the environment)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from appliance.errors import ConfigError
from appliance.spec.schema import ApiKeySpec, RateLimitStoreSpec

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


STORE_SCHEMES = ("redis", "rediss", "redis+unix")  # Valkey speaks the same protocol: redis://


def resolve_store_url(store: RateLimitStoreSpec, environ: Mapping[str, str] | None = None) -> str:
    """`[auth.rate_limit_store]`'s URL; unset, doubly set or of a scheme we do not speak stops start-up."""
    env = os.environ if environ is None else environ
    key = "auth.rate_limit_store"
    if (store.url is None) == (store.url_env is None):
        raise ConfigError(key, "needs exactly one of `url` and `url_env`", 'set url = "redis://host:6379/0" or url_env')
    if store.url_env is not None:
        url = env.get(store.url_env, "")
        if not url:
            raise ConfigError(
                f"{key}.url_env",
                f"environment variable {store.url_env} (the rate-limit store's URL) is not set",
                f"set {store.url_env}=redis://host:6379/0 in the environment (e.g. from a Kubernetes Secret)",
            )
        key = f"{key}.url_env"
    else:
        url = store.url or ""
        key = f"{key}.url"
    scheme = urlsplit(url).scheme
    if scheme not in STORE_SCHEMES or not url.split("://", 1)[-1]:
        raise ConfigError(
            key,
            f"`{redact(url)}` is not a Redis URL",
            f"use one of {', '.join(s + '://' for s in STORE_SCHEMES)}, e.g. redis://embed-redis:6379/0",
        )
    return url


def redact(url: str) -> str:
    """A store URL fit for logs: the password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
