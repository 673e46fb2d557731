"""Per-key limits kept in Redis and shared by every replica (`[auth.rate_limit_store]`), through `limits`.

- Requests per minute: `limits`' moving window, exact: a key gets its N requests in any 60 s, however
  many replicas serve it (one Lua script per request, atomic in Redis).
- Tokens per minute: its sliding-window counter (the previous minute weighted by how much of it is
  still inside the window): O(1) in Redis, where a moving window keeps one list entry per token.
  A request's tokens are known only when it ends, so they are charged then, up to what is left: a
  request larger than what is left fills the window, and the key waits, as with per-replica limits.
- The store failing (an error, or no answer within `timeout_ms`) never fails a request: this replica
  counts in its own memory (`KeyRateLimiter`, from empty) for `retry_s`, then tries the store again.
  So while the store is down each replica enforces every key's limits on its own (fail open to
  per-replica limits, never to none). `embed_rate_limit_store_up` and a log line on each change say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from appliance.gateway.limits import KeyRateLimiter, quota, refusal
from appliance.gateway.metrics import GatewayMetrics
from appliance.spec.keys import redact
from appliance.spec.schema import RateLimitStoreSpec

log = logging.getLogger("appliance.gateway")

T = TypeVar("T")
STORE_ERRORS = (StorageError, RedisError, OSError, TimeoutError)


class _Shared:
    """The ticket of a request admitted by the store (its tokens are charged there too)."""


class SharedKeyRateLimiter:
    """`KeyLimits` with the windows in Redis; per-replica windows while Redis does not answer."""

    store = "redis"

    def __init__(
        self,
        url: str,
        limits: dict[str, tuple[int | None, int | None]],
        spec: RateLimitStoreSpec,
        metrics: GatewayMetrics,
    ) -> None:
        self.url = redact(url)
        self.items: dict[str, tuple[RateLimitItem | None, RateLimitItem | None]] = {
            name: (RateLimitItemPerMinute(rpm) if rpm else None, RateLimitItemPerMinute(tpm) if tpm else None)
            for name, (rpm, tpm) in limits.items()
        }
        self.local = KeyRateLimiter(limits)
        self.timeout_s = spec.timeout_ms / 1000
        self.retry_s = spec.retry_s
        self.metrics = metrics
        storage = RedisStorage(
            f"async+{url}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=spec.key_prefix,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type]  # one try: the fallback is the retry
        )
        self.storage = storage
        self.requests = MovingWindowRateLimiter(storage)
        self.tokens = SlidingWindowCounterRateLimiter(storage)
        self.down_until: float | None = None  # monotonic time of the next try while the store is down
        metrics.limit_store_up.set(1)

    async def start(self) -> None:
        """Ping the store once at start-up: unreachable is a warning (serving goes on), never an error."""
        await self._guarded(self._ping, lambda: None)
        if self.down_until is None:
            log.info("rate limits are shared through %s (cluster-wide)", self.url)

    async def admit(self, key: str | None) -> object | None:
        if key is None or key not in self.items:
            return None
        return await self._guarded(lambda: self._admit(key), lambda: self.local.check(key))

    async def charge(self, key: str | None, tokens: int, ticket: object | None) -> None:
        if key is None or key not in self.items:
            return
        if not isinstance(ticket, _Shared):  # admitted by this replica's own windows: charged there
            await self.local.charge(key, tokens, ticket)
            return
        await self._guarded(lambda: self._charge(key, tokens), lambda: self.local.add_tokens(key, tokens))

    async def quota_headers(self, key: str | None) -> dict[str, str]:
        if key is None or key not in self.items:
            return {}
        return await self._guarded(lambda: self._headers(key), lambda: self.local.headers(key))

    # ------------------------------------------------------------------------------- in the store

    async def _ping(self) -> None:
        if not await self.storage.check():
            raise StorageError(ConnectionError(f"{self.url} did not answer PING"))

    async def _admit(self, key: str) -> _Shared:
        rpm, tpm = self.items[key]
        if tpm is not None:  # tokens first: a request refused for tokens spends none of its requests
            stats = await self.tokens.get_window_stats(tpm, key)
            if stats.remaining <= 0:
                raise refusal(key, f"{tpm.amount} tokens per minute", stats.reset_time - time.time())
        if rpm is not None and not await self.requests.hit(rpm, key):
            stats = await self.requests.get_window_stats(rpm, key)
            raise refusal(key, f"{rpm.amount} requests per minute", stats.reset_time - time.time())
        return _Shared()

    async def _charge(self, key: str, tokens: int) -> None:
        tpm = self.items[key][1]
        if tpm is None or tokens <= 0:
            return
        for _ in range(3):  # another replica may spend between the read and the hit: read again
            stats = await self.tokens.get_window_stats(tpm, key)
            cost = min(tokens, stats.remaining)
            if cost <= 0 or await self.tokens.hit(tpm, key, cost=cost):
                return

    async def _headers(self, key: str) -> dict[str, str]:
        rpm, tpm = self.items[key]
        out: dict[str, str] = {}
        for what, item, limiter in (("requests", rpm, self.requests), ("tokens", tpm, self.tokens)):
            if item is not None:
                stats = await limiter.get_window_stats(item, key)
                reset_s = stats.reset_time - time.time() if stats.remaining < item.amount else 0.0  # as KeyRateLimiter
                out |= quota(what, item.amount, stats.remaining, reset_s)
        return out

    # ------------------------------------------------------------------------------- the fallback

    async def _guarded(self, shared: Callable[[], Awaitable[T]], local: Callable[[], T]) -> T:
        """`shared()` in the store, or `local()` while the store is down (and when this call fails)."""
        if self.down_until is not None and time.monotonic() < self.down_until:
            return local()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await shared()
        except STORE_ERRORS as exc:
            self._failed(exc)
            return local()
        if self.down_until is not None:
            self.down_until = None
            self.metrics.limit_store_up.set(1)
            log.warning("rate-limit store %s answers again: limits are cluster-wide again", self.url)
        return result

    def _failed(self, exc: BaseException) -> None:
        self.metrics.limit_store_errors.inc()
        if self.down_until is None:
            self.metrics.limit_store_up.set(0)
            cause = exc.__cause__ or exc.__context__ or exc
            log.warning(
                "rate-limit store %s is unreachable (%s: %s): this replica limits each key on its own "
                "(from zero) and tries the store again every %g s",
                self.url,
                type(cause).__name__,
                cause or "no answer",
                self.retry_s,
            )
        self.down_until = time.monotonic() + self.retry_s
