"""Backpressure (`ConcurrencyLimiter`) and per-key sliding-window limits (`KeyRateLimiter`), on a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import RateLimitError
from appliance.gateway.limits import ConcurrencyLimiter, KeyRateLimiter, openai_duration


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------- ConcurrencyLimiter


def test_the_concurrency_limiter_admits_up_to_its_limit_then_refuses_at_once_with_429_and_retry_after() -> None:
    limiter = ConcurrencyLimiter(3)
    for _ in range(3):
        limiter.try_acquire()
    with pytest.raises(RateLimitError) as refused:
        limiter.try_acquire()
    error = refused.value
    assert error.status_code == 429 and error.error_type == "rate_limit_error"
    assert error.code == "overloaded" and error.retry_after is not None and error.retry_after >= 1
    assert "3 concurrent" in error.message
    assert limiter.in_flight == 3  # a refusal takes no permit


def test_a_released_permit_admits_the_next_request() -> None:
    limiter = ConcurrencyLimiter(1)
    limiter.try_acquire()
    with pytest.raises(RateLimitError):
        limiter.try_acquire()
    limiter.release()
    limiter.try_acquire()
    assert limiter.in_flight == 1


@given(st.integers(1, 8), st.lists(st.booleans(), max_size=200))
@settings(max_examples=200, deadline=None)
def test_the_limiter_never_has_more_than_its_limit_in_flight_and_refuses_only_when_full(
    limit: int, ops: list[bool]
) -> None:
    limiter = ConcurrencyLimiter(limit)
    held = 0
    for acquire in ops:
        if acquire:
            try:
                limiter.try_acquire()
                held += 1
            except RateLimitError:
                assert held == limit  # refused only when every permit is taken
        elif held:
            limiter.release()
            held -= 1
        assert limiter.in_flight == held <= limit


# --------------------------------------------------------------------------- ConcurrencyLimiter: the queue


def test_without_a_queue_a_request_finding_no_permit_is_refused_at_once() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(1)
        assert limiter.try_take()
        assert await limiter.queue_for(10.0) is False
        assert limiter.in_flight == 1 and limiter.queued == 0

    asyncio.run(scenario())


def test_a_freed_permit_goes_to_the_oldest_waiter_and_the_count_stays() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(1, max_queued=2)
        assert limiter.try_take()
        first = asyncio.ensure_future(limiter.queue_for(10.0))
        second = asyncio.ensure_future(limiter.queue_for(10.0))
        await asyncio.sleep(0)
        assert limiter.queued == 2
        assert await limiter.queue_for(10.0) is False  # the line is full: refused at once
        assert not limiter.try_take()  # nobody jumps the line
        limiter.release()
        assert await first is True and not second.done()
        assert limiter.in_flight == 1 and limiter.queued == 1  # handed over, not returned to the pool
        limiter.release()
        assert await second is True
        limiter.release()
        assert limiter.in_flight == 0 and limiter.queued == 0 and limiter.try_take()

    asyncio.run(scenario())


def test_a_waiter_gives_up_after_its_timeout_and_leaves_the_line() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(1, max_queued=1)
        assert limiter.try_take()
        assert await limiter.queue_for(0.01) is False
        assert limiter.queued == 0
        limiter.release()
        assert limiter.in_flight == 0  # the permit went back to the pool, not to the departed waiter

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_line_and_a_permit_handed_to_it_is_given_back() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(1, max_queued=2)
        assert limiter.try_take()
        gone = asyncio.ensure_future(limiter.queue_for(10.0))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert limiter.queued == 0
        # Handed a permit, then cancelled before it ran: the permit moves on, nothing leaks.
        late = asyncio.ensure_future(limiter.queue_for(10.0))
        await asyncio.sleep(0)
        limiter.release()  # hands the permit to `late`...
        late.cancel()  # ...which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await late
        assert limiter.in_flight == 0 and limiter.queued == 0

    asyncio.run(scenario())


@given(st.integers(1, 4), st.integers(0, 4), st.lists(st.sampled_from(["take", "release", "expire"]), max_size=80))
@settings(max_examples=200, deadline=None)
def test_with_a_queue_permits_never_exceed_the_limit_and_none_idles_while_someone_waits(
    limit: int, max_queued: int, ops: list[str]
) -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit, max_queued)
        held = 0
        waiting: list[asyncio.Future[bool]] = []
        for op in ops:
            if op == "take":
                if limiter.try_take():
                    held += 1
                else:
                    waiting.append(asyncio.ensure_future(limiter.queue_for(3600.0)))
            elif op == "release" and held:
                limiter.release()
                held -= 1
            elif op == "expire" and waiting:
                waiting.pop(0).cancel()
            await asyncio.sleep(0)
            for waiter in [w for w in waiting if w.done()]:
                waiting.remove(waiter)
                if not waiter.cancelled() and waiter.result():
                    held += 1
            assert limiter.in_flight == held <= limit
            assert limiter.queued <= max_queued
            if limiter.queued:
                assert held == limit  # a permit never stands idle while a request waits
        for waiter in waiting:
            waiter.cancel()
        await asyncio.sleep(0)

    asyncio.run(scenario())


# --------------------------------------------------------------------------- KeyRateLimiter: requests


def test_requests_per_minute_admits_that_many_then_refuses_until_the_oldest_leaves_the_window() -> None:
    clock = FakeClock()
    limits = KeyRateLimiter({"k": (3, None)}, clock=clock)
    for step in range(3):
        limits.check("k")
        clock.advance(10)
    # t = 30: three requests at 0, 10, 20 -> full until t = 60.
    with pytest.raises(RateLimitError) as refused:
        limits.check("k")
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.retry_after == 30
    assert "`k`" in refused.value.message and "3 requests per minute" in refused.value.message
    clock.advance(29.5)  # t = 59.5: still full
    with pytest.raises(RateLimitError) as again:
        limits.check("k")
    assert again.value.retry_after == 1
    clock.advance(0.5)  # t = 60: the first request leaves the window
    limits.check("k")
    with pytest.raises(RateLimitError):
        limits.check("k")


def test_refused_requests_do_not_spend_the_budget() -> None:
    clock = FakeClock()
    limits = KeyRateLimiter({"k": (1, None)}, clock=clock)
    limits.check("k")
    for _ in range(50):
        clock.advance(1)
        with pytest.raises(RateLimitError):
            limits.check("k")
    clock.advance(10)  # t = 60: the one admitted request is a minute old
    limits.check("k")


def test_keys_are_limited_independently_and_keys_without_limits_or_no_key_are_never_refused() -> None:
    clock = FakeClock()
    limits = KeyRateLimiter({"a": (1, None), "b": (1, None)}, clock=clock)
    limits.check("a")
    with pytest.raises(RateLimitError):
        limits.check("a")
    limits.check("b")  # a's limit is a's alone
    for _ in range(1000):
        limits.check("unlimited")
        limits.check(None)
        limits.add_tokens("unlimited", 10_000)
        limits.add_tokens(None, 10_000)


# --------------------------------------------------------------------------- KeyRateLimiter: tokens


def test_tokens_per_minute_counts_tokens_of_finished_requests_and_refuses_once_the_budget_is_spent() -> None:
    clock = FakeClock()
    limits = KeyRateLimiter({"k": (None, 100)}, clock=clock)
    limits.check("k")
    limits.add_tokens("k", 60)
    clock.advance(5)
    limits.check("k")  # 60 < 100: admitted
    limits.add_tokens("k", 60)
    clock.advance(5)
    with pytest.raises(RateLimitError) as refused:  # 120 >= 100
        limits.check("k")
    assert "100 tokens per minute" in refused.value.message
    assert refused.value.retry_after == 50  # the first 60 tokens leave at t = 60
    clock.advance(50)  # t = 60: 60 tokens left, 60 remain
    limits.check("k")


def test_a_request_larger_than_the_whole_token_budget_is_admitted_once_then_the_key_waits() -> None:
    clock = FakeClock()
    limits = KeyRateLimiter({"k": (None, 100)}, clock=clock)
    limits.check("k")
    limits.add_tokens("k", 5000)
    with pytest.raises(RateLimitError):
        limits.check("k")
    clock.advance(60)
    limits.check("k")


def test_both_limits_apply_to_one_key() -> None:
    clock = FakeClock()
    limits = KeyRateLimiter({"k": (2, 1000)}, clock=clock)
    limits.check("k")
    limits.add_tokens("k", 1)
    limits.check("k")
    limits.add_tokens("k", 1)
    with pytest.raises(RateLimitError) as refused:  # requests, not tokens, are the limit here
        limits.check("k")
    assert "2 requests per minute" in refused.value.message


def test_retry_after_for_the_token_limit_is_when_enough_tokens_have_left_the_window() -> None:
    """Retry-After must not send the client back while the key is still over its token budget.

    t=0: a 10-token request; t=10: a 150-token request (budget 100). At t=20 the key is refused.
    The 150 tokens leave the window at t=70, so the honest Retry-After is 50 s. The limiter
    computes it from the OLDEST REQUEST (t=0) instead: 40 s, and a client that obeys it is
    refused again at t=60.
    """
    clock = FakeClock(0.0)
    limits = KeyRateLimiter({"k": (None, 100)}, clock=clock)
    limits.check("k")
    limits.add_tokens("k", 10)
    clock.advance(10)
    limits.check("k")
    limits.add_tokens("k", 150)
    clock.advance(10)  # t = 20
    with pytest.raises(RateLimitError) as refused:
        limits.check("k")
    retry_after = refused.value.retry_after
    assert retry_after is not None
    clock.advance(retry_after)  # the client obeys Retry-After ...
    limits.check("k")  # ... and must now be admitted
    assert retry_after == 50


@given(st.lists(st.tuples(st.floats(0, 30), st.integers(0, 80)), min_size=1, max_size=60))
@settings(max_examples=200, deadline=None)
def test_the_token_window_always_equals_the_tokens_of_requests_from_the_last_minute(
    steps: list[tuple[float, int]],
) -> None:
    """Sequential requests (each finishes before the next starts): the window is exact."""
    clock = FakeClock(0.0)
    limits = KeyRateLimiter({"k": (None, 10**9)}, clock=clock)
    history: list[tuple[float, int]] = []
    for gap, tokens in steps:
        clock.advance(gap)
        limits.check("k")
        limits.add_tokens("k", tokens)
        history.append((clock.now, tokens))
        limits.check("k")  # trims; an admitted check adds a zero-token event
        history.append((clock.now, 0))
        in_window = sum(t for when, t in history if when > clock.now - KeyRateLimiter.WINDOW_S)
        assert limits.windows["k"].tokens == in_window


# --------------------------------------------------------------------------- OpenAI's headers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.0171, "18ms"),
        (0.9995, "1s"),
        (1, "1s"),
        (8.64, "8.64s"),
        (59.4381, "59.439s"),
        (60, "1m0s"),
        (61.5, "1m1.5s"),
    ],
)
def test_reset_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert openai_duration(seconds) == text


def test_headers_report_limit_remaining_and_when_remaining_rises() -> None:
    clock = FakeClock()
    limiter = KeyRateLimiter({"k": (3, 100), "open": (None, None)}, clock=clock)
    assert limiter.headers("k") == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "0ms",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "0ms",
    }
    limiter.add_tokens("k", 30, limiter.check("k"))
    clock.advance(10)
    limiter.add_tokens("k", 50, limiter.check("k"))
    got = limiter.headers("k")
    assert (got["x-ratelimit-remaining-requests"], got["x-ratelimit-reset-requests"]) == ("1", "50s")
    assert (got["x-ratelimit-remaining-tokens"], got["x-ratelimit-reset-tokens"]) == ("20", "50s")
    limiter.add_tokens("k", 40, limiter.check("k"))  # 120 tokens: over the budget until the first 30 leave
    got = limiter.headers("k")
    assert (got["x-ratelimit-remaining-requests"], got["x-ratelimit-remaining-tokens"]) == ("0", "0")
    assert (got["x-ratelimit-reset-requests"], got["x-ratelimit-reset-tokens"]) == ("50s", "50s")
    with pytest.raises(RateLimitError) as refused:
        limiter.check("k")
    assert refused.value.retry_after == 50  # the requests limit is hit first: it frees in 50 s
    assert refused.value.headers == {"retry-after-ms": "50000"}
    assert limiter.headers("open") == {} and limiter.headers(None) == {}


def test_the_retry_after_of_a_token_refusal_agrees_with_the_token_reset_header() -> None:
    clock = FakeClock()
    limiter = KeyRateLimiter({"k": (None, 100)}, clock=clock)
    limiter.add_tokens("k", 70, limiter.check("k"))
    clock.advance(20.25)
    limiter.add_tokens("k", 40, limiter.check("k"))
    reset = limiter.headers("k")["x-ratelimit-reset-tokens"]
    assert reset == "39.75s"  # the first request's 70 tokens leave, then 40 < 100
    with pytest.raises(RateLimitError) as refused:
        limiter.check("k")
    assert refused.value.retry_after == 40 and refused.value.headers == {"retry-after-ms": "39750"}
