"""The leased limiter (pure): grants only what was leased, sizes leases, falls back locally."""

from __future__ import annotations

import pytest

from ratelimitd.core.lease import LeasedLimiter, LeaseSettings
from ratelimitd.core.limiter import LimitSpec
from ratelimitd.daemon.clock import FakeClock

SETTINGS = LeaseSettings(lease_time=0.1, max_share=0.1, fallback_share=0.5)
LIMITS = {"requests": LimitSpec(100.0, 100.0), "tokens": LimitSpec(10_000.0, 10_000.0)}


def limiter(clock: FakeClock, *, fallback: bool = False) -> tuple[LeasedLimiter, list[int]]:
    calls: list[int] = []
    leased = LeasedLimiter(LIMITS, clock.monotonic(), SETTINGS, lambda: calls.append(1), fallback=fallback)
    return leased, calls


def test_it_grants_only_what_was_leased_and_asks_once_for_more() -> None:
    clock = FakeClock()
    leased, calls = limiter(clock)
    now = clock.monotonic()
    assert leased.try_take({"requests": 1}, now) > 0.0  # nothing leased yet
    assert calls == [1]
    assert leased.try_take({"requests": 1}, now) > 0.0
    assert calls == [1]  # a refill is already on its way
    assert leased.lease_request(now)["requests"][0] == 1.0  # a waiter needs one
    leased.credit({"requests": 3, "tokens": 500}, now)
    assert [leased.try_take({"requests": 1}, now) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.02)]


def test_a_multi_unit_cost_is_all_or_nothing() -> None:
    clock = FakeClock()
    leased, _ = limiter(clock)
    now = clock.monotonic()
    leased.credit({"requests": 5, "tokens": 100}, now)
    assert leased.try_take({"requests": 1, "tokens": 150}, now) > 0.0
    assert leased.balance == {"requests": 5, "tokens": 100}  # nothing taken
    assert leased.try_take({"requests": 1, "tokens": 100, "images": 3}, now) == 0.0  # unlimited unit ignored
    assert leased.balance == {"requests": 4, "tokens": 0}


def test_a_lease_is_sized_from_the_recent_grant_rate_and_bounded_by_the_burst() -> None:
    clock = FakeClock()
    leased, _ = limiter(clock)
    leased.lease_request(clock.monotonic())
    leased.credit({"requests": 40, "tokens": 0}, clock.monotonic())
    for _ in range(40):  # 40 requests/s for a second
        clock.advance(0.025)
        leased.try_take({"requests": 1}, clock.monotonic())
    request = leased.lease_request(clock.monotonic())
    least, most = request["requests"]
    assert least == 0.0
    assert most == pytest.approx(40 * SETTINGS.lease_time)  # 100 ms of 40/s
    # A faster host is capped at max_share of the burst (10 of 100).
    leased.credit({"requests": 1000, "tokens": 0}, clock.monotonic())
    for _ in range(1000):
        clock.advance(0.001)
        leased.try_take({"requests": 1}, clock.monotonic())
    assert leased.lease_request(clock.monotonic())["requests"][1] == pytest.approx(10.0)


def test_nothing_is_asked_while_the_lease_is_above_its_low_water() -> None:
    clock = FakeClock()
    leased, calls = limiter(clock)
    leased.credit({"requests": 10, "tokens": 10}, clock.monotonic())
    clock.advance(1.0)
    assert leased.lease_request(clock.monotonic()) == {}  # idle: its target is 0
    assert calls == []


def test_fallback_grants_what_was_left_of_the_lease_then_the_share_of_the_rate() -> None:
    clock = FakeClock()
    leased, _ = limiter(clock)
    now = clock.monotonic()
    leased.credit({"requests": 3, "tokens": 300}, now)
    leased.enter_fallback(now)
    assert leased.balance == {"requests": 0.0, "tokens": 0.0}
    assert [leased.try_take({"requests": 1}, now) for _ in range(3)] == [0.0] * 3
    assert leased.try_take({"requests": 1}, now) == pytest.approx(1 / 50)  # half of 100/s
    clock.advance(1.0)
    granted = sum(leased.try_take({"requests": 1}, clock.monotonic()) == 0.0 for _ in range(100))
    assert granted == 50
    leased.set_scale(0.5, clock.monotonic())  # learning still applies, times the share
    assert leased.units["requests"].rate == pytest.approx(25.0)
    leased.leave_fallback(clock.monotonic())
    assert leased.units["requests"].rate == pytest.approx(50.0)
    assert leased.try_take({"requests": 1}, clock.monotonic()) > 0.0  # leases only again


def test_a_pause_forfeits_the_lease_until_it_ends() -> None:
    clock = FakeClock()
    leased, _ = limiter(clock)
    now = clock.monotonic()
    leased.credit({"requests": 5, "tokens": 5}, now)
    leased.hold_until(now + 2.0)
    assert leased.balance["requests"] == 0.0
    assert leased.try_take({"requests": 1}, now) == pytest.approx(2.0)
    assert leased.delay_for({"requests": 1}, now) >= 2.0
    leased.release_hold(now)
    leased.credit({"requests": 1, "tokens": 1}, now)
    assert leased.try_take({"requests": 1}, now) == 0.0


def test_take_back_empties_the_lease() -> None:
    clock = FakeClock()
    leased, _ = limiter(clock)
    leased.credit({"requests": 2.5, "tokens": 0}, clock.monotonic())
    assert leased.take_back() == {"requests": 2.5}
    assert leased.take_back() == {}


def test_settling_owes_or_returns_units_through_the_lease() -> None:
    clock = FakeClock()
    leased, calls = limiter(clock)
    now = clock.monotonic()
    leased.credit({"requests": 2, "tokens": 1000}, now)
    assert leased.try_take({"requests": 1, "tokens": 1000}, now) == 0.0
    leased.settle({"tokens": 300}, now)  # used 1,300: 300 more than estimated
    assert leased.balance["tokens"] == -300
    assert leased.try_take({"requests": 1, "tokens": 1}, now) > 0.0  # owed first
    assert leased.lease_request(now)["tokens"][0] == pytest.approx(301)
    leased.settle({"tokens": -500}, now)  # and a smaller one gives back
    assert leased.balance["tokens"] == 200
    assert calls == [1]


def test_the_local_view_mirrors_what_the_shared_bucket_has_left() -> None:
    """`most_headroom` reads the limits' `available`: with leases it is the shared bucket's
    fill at the last lease plus the lease held, refilling at the shared rate."""
    clock = FakeClock()
    leased, _ = limiter(clock)
    requests = leased.units["requests"]
    assert requests.available(clock.monotonic()) == 100.0  # nothing known yet: full
    leased.credit({"requests": 10, "tokens": 0}, clock.monotonic(), {"requests": 30.0, "tokens": 9_000.0})
    assert requests.available(clock.monotonic()) == pytest.approx(40.0)
    clock.advance(0.2)  # refills at 100/s like the shared bucket
    assert requests.available(clock.monotonic()) == pytest.approx(60.0)
    leased.denied(0.5, clock.monotonic())  # the store is empty: only the lease is left
    assert requests.available(clock.monotonic()) == pytest.approx(10.0)
    leased.credit({"requests": 1, "tokens": 0}, clock.monotonic())  # no word on what is left
    assert requests.available(clock.monotonic()) == pytest.approx(10.0)
