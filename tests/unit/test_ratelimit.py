"""The per-identity token buckets of the read endpoint, with the clock passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credbridge.core import ratelimit


def test_a_new_identity_gets_its_burst_then_waits_for_the_rate() -> None:
    limiter = ratelimit.RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("sa", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("sa", 100.0) == pytest.approx(0.5)
    assert limiter.take("sa", 100.25) == pytest.approx(0.25)  # half a token came back
    assert limiter.take("sa", 100.5) == 0.0


def test_identities_do_not_share_a_bucket() -> None:
    limiter = ratelimit.RateLimiter(rate=1.0, burst=1)
    assert limiter.take("runaway", 0.0) == 0.0
    assert limiter.take("runaway", 0.0) > 0
    assert limiter.take("quiet", 0.0) == 0.0


def test_a_bucket_refills_to_the_burst_and_no_further() -> None:
    limiter = ratelimit.RateLimiter(rate=10.0, burst=2)
    limiter.take("sa", 0.0)
    limiter.take("sa", 0.0)
    allowed = [limiter.take("sa", 1000.0) == 0.0 for _ in range(5)]
    assert allowed == [True, True, False, False, False]


def test_the_number_of_buckets_is_bounded_and_the_least_recent_goes_first() -> None:
    limiter = ratelimit.RateLimiter(rate=1.0, burst=1, max_identities=2)
    limiter.take("a", 0.0)
    limiter.take("b", 0.0)
    limiter.take("a", 0.0)  # a is now the most recent
    limiter.take("c", 0.0)
    assert len(limiter) == 2
    assert limiter.take("a", 0.0) > 0  # still remembered: still empty
    assert limiter.take("b", 0.0) == 0.0  # forgotten: a full bucket again


def test_a_clock_going_backwards_does_not_add_tokens() -> None:
    limiter = ratelimit.RateLimiter(rate=1.0, burst=1)
    limiter.take("sa", 10.0)
    assert limiter.take("sa", 5.0) > 0


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate must be"):
        ratelimit.RateLimiter(rate=rate, burst=burst)


@given(
    rate=st.floats(0.1, 100.0),
    burst=st.integers(1, 50),
    times=st.lists(st.floats(0.0, 60.0), min_size=1, max_size=300),
)
def test_no_identity_gets_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, times: list[float]) -> None:
    limiter = ratelimit.RateLimiter(rate=rate, burst=burst)
    ordered = sorted(times)
    allowed = sum(1 for now in ordered if limiter.take("sa", now) == 0.0)
    assert allowed <= burst + rate * (ordered[-1] - ordered[0]) + 1e-6


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30.0, "30")])
def test_retry_after_is_whole_seconds_and_never_zero(seconds: float, header: str) -> None:
    assert ratelimit.retry_after_header(seconds) == header
