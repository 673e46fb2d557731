"""`[auth.rate_limit_store]`: its URL checked at compile time, and a store that does not answer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from appliance.errors import ConfigError, RateLimitError
from appliance.gateway.metrics import GatewayMetrics
from appliance.gateway.shared_limits import SharedKeyRateLimiter
from appliance.spec.keys import redact, resolve_store_url
from appliance.spec.loader import parse_spec
from appliance.spec.schema import RateLimitStoreSpec
from harness.stack import free_port


@pytest.mark.parametrize(
    ("store", "environ", "key", "words"),
    [
        (RateLimitStoreSpec(), {}, "auth.rate_limit_store", "exactly one of `url` and `url_env`"),
        (RateLimitStoreSpec(url="redis://a", url_env="X"), {}, "auth.rate_limit_store", "exactly one"),
        (RateLimitStoreSpec(url_env="EMBED_REDIS_URL"), {}, "auth.rate_limit_store.url_env", "EMBED_REDIS_URL"),
        (RateLimitStoreSpec(url="http://redis:6379"), {}, "auth.rate_limit_store.url", "not a Redis URL"),
        (RateLimitStoreSpec(url="redis://"), {}, "auth.rate_limit_store.url", "not a Redis URL"),
        (RateLimitStoreSpec(url_env="U"), {"U": "memcached://x"}, "auth.rate_limit_store.url_env", "not a Redis"),
    ],
)
def test_a_bad_store_url_stops_start_up_naming_the_key(
    store: RateLimitStoreSpec, environ: dict[str, str], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_store_url(store, environ)
    assert raised.value.key == key and words in str(raised.value)


def test_the_store_url_comes_inline_or_from_the_environment_and_its_password_never_reaches_a_log() -> None:
    assert resolve_store_url(RateLimitStoreSpec(url="redis://r:6379/0"), {}) == "redis://r:6379/0"
    url = "rediss://:s3cret@r.example:6380/1"
    assert resolve_store_url(RateLimitStoreSpec(url_env="U"), {"U": url}) == url
    assert redact(url) == "rediss://:***@r.example:6380/1"
    with pytest.raises(ConfigError) as raised:
        resolve_store_url(RateLimitStoreSpec(url="http://:s3cret@r"), {})
    assert "s3cret" not in str(raised.value)


def test_the_table_is_part_of_embed_toml_and_unknown_keys_in_it_are_errors() -> None:
    base = '[[models]]\nname = "m"\npath = "m"\n[auth.rate_limit_store]\nurl = "redis://r:6379"\n'
    spec = parse_spec(base + "retry_s = 2\n")
    assert spec.auth.rate_limit_store == RateLimitStoreSpec(url="redis://r:6379", retry_s=2)
    with pytest.raises(ConfigError) as raised:
        parse_spec(base + "timeout = 2\n")
    assert "auth.rate_limit_store" in str(raised.value) and "timeout" in str(raised.value)


def test_a_store_that_does_not_answer_falls_back_to_this_replicas_own_limits_with_a_metric_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = GatewayMetrics(None)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limiter = SharedKeyRateLimiter(url, {"k": (2, None)}, RateLimitStoreSpec(url=url, retry_s=60), metrics)

    async def run() -> list[str]:
        await limiter.start()
        outcomes = []
        for _ in range(3):
            try:
                ticket = await limiter.admit("k")
                await limiter.charge("k", 5, ticket)
                outcomes.append((await limiter.quota_headers("k"))["x-ratelimit-remaining-requests"])
            except RateLimitError:
                outcomes.append("429")
        return outcomes

    with caplog.at_level(logging.WARNING, "appliance.gateway"):
        assert asyncio.run(run()) == ["1", "0", "429"]  # per replica, from zero: neither open nor closed
    assert metrics.limit_store_up._value.get() == 0
    assert metrics.limit_store_errors._value.get() == 1  # one try, then retry_s of local limits
    (line,) = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert url in line and "on its own" in line
