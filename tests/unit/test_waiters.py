"""FIFO wait queue of one bucket, driven by a FakeClock: nothing sleeps.

The event loop is real but never left running on its own: its `time` is the fake clock,
so a timer's `when()` says exactly when the queue asked to be woken, and `run_due` runs
what is due at the fake time (the queue's timers and deferred reschedules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from support import run_due

from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.limiter import BucketLimiter, LimitSpec
from ratelimitd.daemon.waiters import Waiter, WaitQueue

if TYPE_CHECKING:
    import asyncio

    from ratelimitd.daemon.clock import FakeClock

ONE = {"requests": 1.0}


class Harness:
    def __init__(self, loop: asyncio.AbstractEventLoop, clock: FakeClock, rate: float, burst: float) -> None:
        self.loop = loop
        self.clock = clock
        self.limiter = BucketLimiter({"requests": LimitSpec(rate, burst)}, clock.monotonic())
        self.queue = WaitQueue(lambda: self.limiter, clock.monotonic, loop)

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def drain(self, amount: float) -> None:
        """Take `amount` permits now, as granted acquires would."""
        assert self.limiter.try_take({"requests": amount}, self.now) == 0.0

    def push(self, amount: float = 1.0) -> Waiter:
        return self.queue.push({"requests": amount}, self.now)

    def wake_at(self) -> float | None:
        """The fake time the queue's timer is armed for."""
        timer = self.queue._timer
        return None if timer is None or timer.cancelled() else timer.when()

    def advance_to_wake(self) -> None:
        """Move the clock to the armed timer and run what is due (the timer included)."""
        when = self.wake_at()
        assert when is not None, "no timer armed"
        self.clock.advance(max(0.0, when - self.now))
        run_due(self.loop)

    def available(self) -> float:
        return self.limiter.units["requests"].available(self.now)


def _harness(
    loop: asyncio.AbstractEventLoop, clock: FakeClock, rate: float = 10.0, burst: float = 1.0
) -> Harness:
    return Harness(loop, clock, rate, burst)


def test_a_waiter_that_fits_now_is_granted_at_push(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock)
    waiter = h.push()
    assert waiter.future.done()
    assert waiter.future.result() == h.now
    assert len(h.queue) == 0
    assert h.wake_at() is None


def test_waiters_are_served_in_arrival_order_by_one_timer(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock)
    h.drain(1)
    waiters = [h.push() for _ in range(3)]
    assert len(h.queue) == 3
    start = h.now
    assert h.wake_at() == pytest.approx(start + 0.1)
    granted_at = []
    for expected in waiters:
        h.advance_to_wake()
        done = [w for w in waiters if w.future.done()]
        assert done[-1] is expected
        granted_at.append(expected.future.result())
    assert granted_at == pytest.approx([start + 0.1, start + 0.2, start + 0.3])
    assert len(h.queue) == 0
    assert h.wake_at() is None


def test_a_large_cost_at_the_head_is_not_starved_by_small_ones(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock, rate=10.0, burst=5.0)
    h.drain(5)
    large = h.push(5)
    smalls = [h.push(1) for _ in range(3)]
    start = h.now
    fake_clock.advance(0.1)  # one permit back: a small one would fit, but it is not its turn
    h.queue.reschedule()
    assert not any(w.future.done() for w in [large, *smalls])
    assert h.wake_at() == pytest.approx(start + 0.5)
    h.advance_to_wake()
    assert large.future.result() == pytest.approx(start + 0.5)
    assert not any(w.future.done() for w in smalls)
    for expected_at in (0.6, 0.7, 0.8):
        h.advance_to_wake()
        assert max(w.future.result() for w in smalls if w.future.done()) == pytest.approx(start + expected_at)
    assert all(w.future.done() for w in smalls)


def test_a_cancelled_head_consumes_nothing_and_the_next_moves_up(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock)
    h.drain(1)
    first, second = h.push(), h.push()
    start = h.now
    h.queue.cancel(first)
    assert first.future.cancelled()
    assert len(h.queue) == 1
    assert h.queue.pending_cost() == ONE
    h.advance_to_wake()
    assert second.future.result() == pytest.approx(start + 0.1)  # first's turn went to second
    assert h.available() == pytest.approx(0.0)
    fake_clock.advance(0.1)
    assert h.available() == pytest.approx(1.0)  # nothing else was taken


def test_cancelling_a_waiter_twice_or_after_its_grant_is_harmless(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock)
    granted = h.push()
    h.queue.cancel(granted)
    assert granted.future.result() == h.now
    waiting = h.push()  # the bucket is empty now
    assert not waiting.future.done()
    h.queue.cancel(waiting)
    h.queue.cancel(waiting)
    assert len(h.queue) == 0
    assert h.queue.pending_cost() == {}


def test_a_client_dropping_many_waiters_at_once_is_granted_none_of_them(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    # Regression: cancelling the head used to reschedule at once, granting the same client's
    # next waiters (consuming permits) while the rest of its batch was being cancelled.
    h = _harness(loop, fake_clock, rate=1.0, burst=100.0)
    h.drain(90)  # 10 left; the head wants 100 and blocks the small ones behind it
    head = h.push(100)
    mine = [h.push(1) for _ in range(50)]
    other = h.push(1)
    for waiter in [head, *mine]:
        h.queue.cancel(waiter)
    assert not other.future.done()
    run_due(loop)  # the deferred reschedule
    assert all(w.future.cancelled() for w in [head, *mine])
    assert other.future.result() == h.now
    assert h.available() == pytest.approx(9.0)  # only `other` took a permit


def test_cancel_with_an_exception_answers_the_waiter(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock)
    h.drain(1)
    waiter = h.push()
    error = RatelimitdError(ErrorCode.TIMEOUT, "no permit", retry_after=0.1)
    h.queue.cancel(waiter, error)
    assert waiter.future.exception() is error
    assert len(h.queue) == 0


def test_estimate_counts_everyone_already_waiting(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock)
    h.drain(1)
    assert h.queue.estimate(ONE, h.now) == pytest.approx(0.1)
    waiters = [h.push() for _ in range(4)]
    assert h.queue.pending_cost() == {"requests": 4.0}
    assert h.queue.estimate(ONE, h.now) == pytest.approx(0.5)
    assert h.queue.estimate({}, h.now) == pytest.approx(0.4)
    h.queue.cancel(waiters[2])
    assert h.queue.estimate(ONE, h.now) == pytest.approx(0.4)


def test_fail_all_answers_everyone_and_disarms_the_timer(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock)
    h.drain(1)
    waiters = [h.push() for _ in range(5)]
    error = RatelimitdError(ErrorCode.SHUTTING_DOWN, "stopping")
    h.queue.fail_all(error)
    assert all(w.future.exception() is error for w in waiters)
    assert len(h.queue) == 0
    assert h.queue.pending_cost() == {}
    assert h.wake_at() is None
    fake_clock.advance(10)
    assert h.available() == pytest.approx(1.0)  # nobody took anything


def test_a_rate_change_takes_effect_at_the_next_reschedule(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock, rate=1.0, burst=1.0)
    h.drain(1)
    waiter = h.push()
    start = h.now
    assert h.wake_at() == pytest.approx(start + 1.0)
    h.limiter.set_scale(10.0, h.now)
    h.queue.reschedule()
    assert h.wake_at() == pytest.approx(start + 0.1)
    h.advance_to_wake()
    assert waiter.future.result() == pytest.approx(start + 0.1)


def test_the_limiter_is_looked_up_at_each_wake(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock, rate=1.0, burst=1.0)
    h.drain(1)
    waiter = h.push()
    h.limiter = BucketLimiter({"requests": LimitSpec(100.0, 1.0)}, h.now)  # a reload replaced it
    h.queue.reschedule()
    assert waiter.future.result() == h.now


def test_the_timer_firing_early_rearms_without_granting(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    h = _harness(loop, fake_clock)
    h.drain(1)
    waiter = h.push()
    start = h.now
    fake_clock.advance(0.05)
    h.queue.reschedule()
    assert not waiter.future.done()
    assert h.wake_at() == pytest.approx(start + 0.1)


def test_cancelled_waiters_behind_a_blocked_head_do_not_pile_up(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    # Cancelled waiters leave the deque lazily, at the head; behind a head that blocks for
    # long, mass timeouts must not grow it without bound.
    h = _harness(loop, fake_clock, rate=1.0, burst=100.0)
    h.drain(100)
    head = h.push(100)  # waits 100 s
    survivors = []
    for i in range(20_000):
        waiter = h.push(1)
        if i % 1000 == 0:
            survivors.append(waiter)
        else:
            h.queue.cancel(waiter)
    assert len(h.queue) == 1 + len(survivors)
    assert len(h.queue._queue) <= 2 * len(h.queue) + 1024 + 1
    # Order is kept: the head first, then the survivors in arrival order.
    h.advance_to_wake()
    assert head.future.done()
    assert [w.future.done() for w in survivors] == [False] * len(survivors)


def test_no_queued_unit_outlives_the_waiters_that_named_it(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    limits = {"requests": LimitSpec(1.0, 1.0), "tokens": LimitSpec(100.0, 100.0)}
    limiter = BucketLimiter(limits, fake_clock.monotonic())
    queue = WaitQueue(lambda: limiter, fake_clock.monotonic, loop)
    now = fake_clock.monotonic()
    assert limiter.try_take({"requests": 1.0}, now) == 0.0
    head = queue.push({"requests": 1.0}, now)
    left = [queue.push({"requests": 1.0, "tokens": 0.1 * (i + 1)}, now) for i in range(10)]
    free = queue.push({"requests": 1.0, "tokens": 0.0}, now)
    assert queue.pending_cost() == pytest.approx({"requests": 12.0, "tokens": 5.5})
    for waiter in [*left, free]:
        queue.cancel(waiter)
    # Float sums leave residue; the key goes with the last waiter that named the unit.
    assert queue.pending_cost() == {"requests": 1.0}
    assert not head.future.done()


def test_the_estimate_reads_only_the_units_the_bucket_limits(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    limiter = BucketLimiter({"requests": LimitSpec(10.0, 1.0)}, fake_clock.monotonic())
    queue = WaitQueue(lambda: limiter, fake_clock.monotonic, loop)
    now = fake_clock.monotonic()
    assert limiter.try_take({"requests": 1.0}, now) == 0.0
    queue.push({"requests": 2.0, "tokens": 1e9}, now)
    assert queue.estimate({"requests": 1.0, "other": 5.0}, now) == pytest.approx(0.3)
    assert queue.estimate({}, now) == pytest.approx(0.2)
