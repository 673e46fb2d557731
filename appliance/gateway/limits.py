"""Backpressure and per-key rate limits: excess is refused (429), or waits briefly in a bounded queue."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.errors import RateLimitError


class KeyLimits(Protocol):
    """Per-key limits as the routes use them, wherever the windows live (this process, or Redis)."""

    store: str  # "memory" or "redis", for /info

    async def admit(self, key: str | None) -> object | None:
        """Count a new request of `key`, or raise RateLimitError (429 + Retry-After); returns a ticket."""

    async def charge(self, key: str | None, tokens: int, ticket: object | None) -> None:
        """Charge the finished request `ticket` its tokens."""

    async def quota_headers(self, key: str | None) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for `key` (none for a key without limits)."""


class ConcurrencyLimiter:
    """A permit counter (TEI's `try_acquire_permit`) with an optional bounded FIFO queue; one event loop, no lock.

    Without a queue, a permit freed under overload stays idle until the next arrival: with 4 permits
    and Poisson arrivals at twice the capacity, 3.0 of the 4 were in use on average and goodput was
    0.89x capacity (docs/performance.md, "Overload: a short queue in front of the permits"). With
    `max_queued` > 0 a request finding no permit waits (at most `max_queued` of them, in arrival
    order) and `release` hands the freed permit straight to the oldest waiter.
    """

    def __init__(self, limit: int, max_queued: int = 0) -> None:
        self.limit = limit
        self.max_queued = max_queued
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[bool]] = deque()  # True: a permit was handed over

    def try_take(self) -> bool:
        """Take a permit if one is free (never ahead of a waiter: while any wait, none is free)."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    async def queue_for(self, timeout_s: float) -> bool:
        """Wait in line for a permit: True once one is handed over; False at once when the queue is
        full, or after `timeout_s` without one."""
        if len(self.waiters) >= self.max_queued:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiters.append(waiter)
        timer = loop.call_later(timeout_s, self._expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a permit, then cancelled before using it
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self.waiters.remove(waiter)
            waiter.set_result(False)

    @property
    def queued(self) -> int:
        return len(self.waiters)

    def try_acquire(self) -> None:
        """Take a permit, or raise the 429 the server answers when it has none."""
        if not self.try_take():
            raise self.overloaded()

    def overloaded(self) -> RateLimitError:
        return RateLimitError(
            f"the server is at its limit of {self.limit} concurrent requests; retry shortly", code="overloaded"
        )

    def release(self) -> None:
        """Give the permit back: to the oldest waiter if any (the count stays), else to the pool."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.in_flight -= 1

    def hold_until_done(self, work: asyncio.Future[Any], on_done: Callable[[], None] | None = None) -> None:
        """Count `work` (abandoned by its client: a 504) as in flight until it ends.

        Its tokenization and Triton calls carry on (a Triton call cannot be taken back), so the
        permit stays taken: at most `limit` requests' worth of work is ever in Triton, even when
        clients time out.
        """
        self.in_flight += 1

        def done(finished: asyncio.Future[Any]) -> None:
            if not finished.cancelled():
                finished.exception()  # retrieved: nobody else will ask for it
            self.release()
            if on_done is not None:
                on_done()

        work.add_done_callback(done)


@dataclass
class _Event:
    """One request in a key's window: when it started and the tokens it used."""

    at: float
    tokens: int = 0


@dataclass
class _Window:
    events: deque[_Event] = field(default_factory=deque)
    tokens: int = 0


def openai_duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` format: `17ms`, `1s`, `8.64s`, `1m0s`."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class KeyRateLimiter:
    """Sliding one-minute windows of requests and tokens per key name.

    `headers` reports each limit as OpenAI does (`x-ratelimit-limit-*`, `-remaining-*`, `-reset-*`);
    `reset` is when `remaining` next rises (the oldest counted request leaves the window, or, once
    the token budget is spent, enough of them have): for a refused request that is its Retry-After.
    """

    WINDOW_S = 60.0
    store = "memory"  # what /info reports

    def __init__(
        self, limits: dict[str, tuple[int | None, int | None]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits  # key name -> (requests_per_minute, tokens_per_minute)
        self.clock = clock
        self.windows: dict[str, _Window] = {}

    def check(self, key: str | None) -> _Event | None:
        """Refuse a new request from `key` when its last minute is at a limit; else count it.

        Returns the request's ticket for `add_tokens`.
        """
        if key is None or key not in self.limits:
            return None
        rpm, tpm = self.limits[key]
        window = self._trim(key)
        now = self.clock()
        if rpm is not None and len(window.events) >= rpm:
            # Free again when the oldest requests leave, enough to drop below the limit.
            free_at = window.events[len(window.events) - rpm].at
            raise refusal(key, f"{rpm} requests per minute", free_at + self.WINDOW_S - now)
        if tpm is not None and window.tokens >= tpm:
            raise refusal(key, f"{tpm} tokens per minute", self._tokens_free_at(window, tpm) + self.WINDOW_S - now)
        event = _Event(now)
        window.events.append(event)
        return event

    async def admit(self, key: str | None) -> object | None:
        return self.check(key)

    async def charge(self, key: str | None, tokens: int, ticket: object | None) -> None:
        self.add_tokens(key, tokens, ticket if isinstance(ticket, _Event) else None)

    async def quota_headers(self, key: str | None) -> dict[str, str]:
        return self.headers(key)

    def add_tokens(self, key: str | None, tokens: int, ticket: _Event | None = None) -> None:
        """Charge `tokens` to the request `ticket` (default: the key's newest request)."""
        if key is None or key not in self.limits:
            return
        window = self.windows[key]
        event = ticket or (window.events[-1] if window.events else None)
        if event is None:
            event = _Event(self.clock())
            window.events.append(event)
        event.tokens += tokens
        if any(e is event for e in window.events):
            window.tokens += tokens

    def headers(self, key: str | None) -> dict[str, str]:
        """OpenAI's six rate-limit headers for `key`'s limits (none for a key without limits)."""
        if key is None or key not in self.limits:
            return {}
        rpm, tpm = self.limits[key]
        window = self._trim(key)
        now = self.clock()
        out: dict[str, str] = {}
        if rpm is not None:
            events = window.events
            free_at = events[max(0, len(events) - rpm)].at if events else now - self.WINDOW_S
            out |= quota("requests", rpm, rpm - len(events), free_at + self.WINDOW_S - now)
        if tpm is not None:
            if window.tokens >= tpm:
                free_at = self._tokens_free_at(window, tpm)
            else:
                free_at = next((e.at for e in window.events if e.tokens), now - self.WINDOW_S)
            out |= quota("tokens", tpm, tpm - window.tokens, free_at + self.WINDOW_S - now)
        return out

    def _trim(self, key: str) -> _Window:
        window = self.windows.setdefault(key, _Window())
        horizon = self.clock() - self.WINDOW_S
        while window.events and window.events[0].at <= horizon:
            window.tokens -= window.events.popleft().tokens
        return window

    @staticmethod
    def _tokens_free_at(window: _Window, tpm: int) -> float:
        """When enough of the oldest requests' tokens have left the window to be under `tpm`."""
        remaining = window.tokens
        for event in window.events:
            remaining -= event.tokens
            if remaining < tpm:
                return event.at
        return window.events[-1].at


def refusal(key: str, what: str, wait_s: float) -> RateLimitError:
    """The 429 for `key` over its limit of `what`, free again in `wait_s` seconds."""
    error = RateLimitError(f"API key `{key}` is over its limit of {what}", code="rate_limit_exceeded")
    error.retry_after = max(1, math.ceil(wait_s))
    error.headers = {"retry-after-ms": str(max(1, math.ceil(wait_s * 1000)))}  # what the OpenAI SDK reads first
    return error


def quota(what: str, limit: int, remaining: int, reset_s: float) -> dict[str, str]:
    """OpenAI's three headers for one limit."""
    return {
        f"x-ratelimit-limit-{what}": str(limit),
        f"x-ratelimit-remaining-{what}": str(max(0, remaining)),
        f"x-ratelimit-reset-{what}": openai_duration(reset_s),
    }
