"""GCRA limiter: plain numbers for time, table-driven steps (gubernator style). No event loop."""

from __future__ import annotations

import pytest

from ratelimitd.core.limiter import BucketLimiter, LimitSpec, UnitLimit

REQ = {"requests": 1.0}


def _limiter(rate: float, burst: float, now: float = 0.0, **others: LimitSpec) -> BucketLimiter:
    return BucketLimiter({"requests": LimitSpec(rate, burst), **others}, now)


# (time, cost, expected delay: 0.0 means granted and taken)
STEPS_10_PER_S_BURST_3: list[tuple[float, float, float]] = [
    (0.0, 1, 0.0),
    (0.0, 1, 0.0),
    (0.0, 1, 0.0),  # the burst of 3 is spent
    (0.0, 1, 0.1),
    (0.05, 1, 0.05),
    (0.1, 1, 0.0),  # one refilled after 1/rate
    (0.1, 2, 0.2),  # two need 0.2 s more; nothing was taken by the refusal
    (0.3, 2, 0.0),
    (10.0, 3, 0.0),  # long idle: back to a full burst, never more
    (10.0, 1, 0.1),
]


def test_gcra_steps() -> None:
    limiter = _limiter(10.0, 3.0)
    for now, cost, expected in STEPS_10_PER_S_BURST_3:
        assert limiter.try_take({"requests": cost}, now) == pytest.approx(expected), (now, cost)


def test_delay_for_predicts_try_take_without_consuming() -> None:
    limiter = _limiter(10.0, 3.0)
    for now, cost, expected in STEPS_10_PER_S_BURST_3:
        predicted = limiter.delay_for({"requests": cost}, now)
        assert predicted == pytest.approx(expected)
        assert limiter.delay_for({"requests": cost}, now) == predicted  # asking twice takes nothing
        assert limiter.try_take({"requests": cost}, now) == pytest.approx(predicted), (now, cost)


@pytest.mark.parametrize("start", [0.0, 1000.0, 2278.157516926, 123456.789, 9.87654321e6])
@pytest.mark.parametrize(("rate", "burst"), [(20.0, 1.0), (3.0, 3.0), (0.1, 7.0), (1000.0, 1.0)])
def test_a_cost_that_fits_exactly_is_granted_at_any_clock_magnitude(
    start: float, rate: float, burst: float
) -> None:
    # Regression: float rounding on the grid of `now` made a burst-sized cost on a full
    # bucket come out a few ulps over, forever (found at now ~ 2278 s of uptime).
    limiter = _limiter(rate, burst, now=start)
    assert limiter.delay_for({"requests": burst}, start + 0.3) == 0.0
    assert limiter.try_take({"requests": burst}, start + 0.3) == 0.0
    later = start + 0.3 + burst / rate
    assert limiter.try_take({"requests": burst}, later) == 0.0


def test_multi_unit_cost_is_all_or_nothing() -> None:
    limiter = _limiter(100.0, 10.0, tokens=LimitSpec(1000.0, 1000.0))
    assert limiter.try_take({"requests": 1, "tokens": 900}, 0.0) == 0.0
    delay = limiter.try_take({"requests": 5, "tokens": 900}, 0.0)
    assert delay == pytest.approx(0.8)  # tokens decide: 800 missing at 1000/s
    assert limiter.units["requests"].available(0.0) == pytest.approx(9.0)  # requests untouched
    assert limiter.try_take({"requests": 9}, 0.0) == 0.0
    assert limiter.units["tokens"].available(0.0) == pytest.approx(100.0)


def test_units_the_bucket_does_not_limit_are_ignored() -> None:
    limiter = _limiter(1.0, 1.0)
    assert limiter.try_take({"images": 1e9}, 0.0) == 0.0
    assert limiter.try_take({"requests": 1, "images": 1e9}, 0.0) == 0.0
    assert limiter.delay_for({"images": 5}, 0.0) == 0.0


def test_never_fits_names_the_first_unit_over_its_burst() -> None:
    limiter = _limiter(1.0, 5.0, tokens=LimitSpec(10.0, 100.0))
    assert limiter.never_fits({"requests": 5}) is None
    assert limiter.never_fits({"requests": 5.5}) == "requests"
    assert limiter.never_fits({"requests": 1, "tokens": 101}) == "tokens"
    assert limiter.never_fits({"other": 1e9}) is None


def test_delay_for_all_sums_queued_costs() -> None:
    limiter = _limiter(10.0, 1.0)
    assert limiter.try_take(REQ, 0.0) == 0.0
    assert limiter.delay_for_all([REQ, REQ, {"requests": 2}], 0.0) == pytest.approx(0.4)
    assert limiter.delay_for_all([], 0.0) == 0.0


def test_set_scale_changes_every_rate_and_keeps_the_fill_level() -> None:
    limiter = _limiter(10.0, 10.0, tokens=LimitSpec(100.0, 100.0))
    assert limiter.try_take({"requests": 6, "tokens": 50}, 0.0) == 0.0
    limiter.set_scale(0.5, 0.0)
    assert limiter.scale == 0.5
    assert limiter.rate() == pytest.approx(5.0)
    assert limiter.rate("tokens") == pytest.approx(50.0)
    assert limiter.units["requests"].baseline == 10.0  # the configured rate stays known
    assert limiter.units["requests"].available(0.0) == pytest.approx(4.0)
    assert limiter.units["tokens"].available(0.0) == pytest.approx(50.0)
    # Refilling now runs at the new rate: 1 request per 0.2 s.
    assert limiter.delay_for({"requests": 5}, 0.0) == pytest.approx(0.2)
    limiter.set_scale(1.0, 0.0)
    assert limiter.rate() == pytest.approx(10.0)
    assert limiter.units["requests"].available(0.0) == pytest.approx(4.0)


@pytest.mark.parametrize("factor", [0.0, -1.0, float("inf"), float("nan")])
def test_set_scale_rejects_nonsense(factor: float) -> None:
    limiter = _limiter(10.0, 10.0)
    with pytest.raises(ValueError, match="scale"):
        limiter.set_scale(factor, 0.0)
    assert limiter.scale == 1.0


def test_set_rate_of_one_unit() -> None:
    limiter = _limiter(10.0, 10.0, tokens=LimitSpec(100.0, 100.0))
    limiter.set_rate("tokens", 1.0, 0.0)
    assert limiter.rate("tokens") == 1.0
    assert limiter.rate() == 10.0
    assert limiter.rate("nope") is None


def test_hold_until_grants_nothing_before_the_deadline_and_no_stored_burst_after() -> None:
    limiter = _limiter(10.0, 5.0)
    limiter.hold_until(30.0)
    assert limiter.delay_for(REQ, 0.0) == pytest.approx(30.1)
    assert limiter.try_take(REQ, 29.0) > 0.0
    # At the deadline the bucket is empty and refills at the rate: one per 0.1 s.
    assert limiter.try_take(REQ, 30.1) == 0.0
    assert limiter.try_take(REQ, 30.1) == pytest.approx(0.1)


def test_hold_until_never_shortens_a_longer_wait() -> None:
    limiter = _limiter(1.0, 1.0)
    limiter.hold_until(100.0)
    limiter.hold_until(10.0)
    assert limiter.delay_for(REQ, 0.0) == pytest.approx(101.0)


def test_release_hold_ends_a_pause_with_an_empty_bucket() -> None:
    limiter = _limiter(10.0, 5.0)
    limiter.hold_until(300.0)
    limiter.release_hold(1.0)
    assert limiter.delay_for(REQ, 1.0) == pytest.approx(0.1)
    assert limiter.delay_for({"requests": 5}, 1.5) == 0.0


def test_unit_limit_rejects_a_zero_rate_or_burst() -> None:
    with pytest.raises(ValueError, match="rate and burst"):
        UnitLimit(LimitSpec(0.0, 1.0), 0.0)
    with pytest.raises(ValueError, match="rate and burst"):
        UnitLimit(LimitSpec(1.0, 0.0), 0.0)


def test_fractional_costs() -> None:
    limiter = _limiter(1.0, 1.0)
    assert limiter.try_take({"requests": 0.5}, 0.0) == 0.0
    assert limiter.try_take({"requests": 0.5}, 0.0) == 0.0
    assert limiter.try_take({"requests": 0.25}, 0.0) == pytest.approx(0.25)


def test_time_before_the_start_does_not_grant_extra() -> None:
    limiter = _limiter(1.0, 2.0, now=100.0)
    assert limiter.try_take({"requests": 2}, 100.0) == 0.0
    assert limiter.try_take(REQ, 99.0) == pytest.approx(2.0)  # a stale `now` is not a refill
