"""Backpressure and per-key rate limits. Excess is refused at once (429), never queued."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.errors import RateLimitError


class ConcurrencyLimiter:
    """A non-blocking permit counter (TEI's `try_acquire_permit`); single event loop, no lock needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self) -> None:
        if self.in_flight >= self.limit:
            raise RateLimitError(
                f"the server is at its limit of {self.limit} concurrent requests; retry shortly",
                code="overloaded",
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1


@dataclass
class _Window:
    events: deque[tuple[float, int]] = field(default_factory=deque)
    tokens: int = 0


class KeyRateLimiter:
    """Sliding one-minute windows of requests and tokens per key name."""

    WINDOW_S = 60.0

    def __init__(self, limits: dict[str, tuple[int | None, int | None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits  # key name -> (requests_per_minute, tokens_per_minute)
        self.clock = clock
        self.windows: dict[str, _Window] = {}

    def check(self, key: str | None) -> None:
        """Refuse a new request from `key` when its last minute is already at a limit."""
        if key is None or key not in self.limits:
            return
        rpm, tpm = self.limits[key]
        window = self._trim(key)
        if rpm is not None and len(window.events) >= rpm:
            raise self._refusal(key, window, f"{rpm} requests per minute")
        if tpm is not None and window.tokens >= tpm:
            raise self._refusal(key, window, f"{tpm} tokens per minute")
        window.events.append((self.clock(), 0))

    def add_tokens(self, key: str | None, tokens: int) -> None:
        if key is None or key not in self.limits:
            return
        window = self.windows[key]
        when, counted = window.events.pop() if window.events else (self.clock(), 0)
        window.events.append((when, counted + tokens))
        window.tokens += tokens

    def _trim(self, key: str) -> _Window:
        window = self.windows.setdefault(key, _Window())
        horizon = self.clock() - self.WINDOW_S
        while window.events and window.events[0][0] <= horizon:
            _, tokens = window.events.popleft()
            window.tokens -= tokens
        return window

    def _refusal(self, key: str, window: _Window, what: str) -> RateLimitError:
        oldest = window.events[0][0] if window.events else self.clock()
        retry = max(1, math.ceil(oldest + self.WINDOW_S - self.clock()))
        error = RateLimitError(f"API key `{key}` is over its limit of {what}", code="rate_limit_exceeded")
        error.retry_after = retry
        return error
