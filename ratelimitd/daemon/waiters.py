"""First-come first-served wait queue of one bucket: futures and one timer.

Shell: uses the asyncio loop's timers. A large cost at the head is not starved by
small ones behind it: nobody is served out of order. A waiter that is cancelled
(client gone, timeout) leaves the queue at once and consumes nothing.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from ratelimitd.core.limiter import BucketLimiter

__all__ = ("WaitQueue", "Waiter")

_COMPACT_SLACK = 1024  # dead entries tolerated beyond twice the live ones
_RESIDUE = 1e-9  # a queued total this small is what is left of adding and subtracting floats
_NO_WAITERS: deque[Waiter] = deque(maxlen=0)  # shared, always empty; push() swaps in a real one


class Waiter:
    __slots__ = ("cost", "enqueued_at", "future", "timeout_handle")

    def __init__(self, cost: dict[str, float], future: asyncio.Future[float], enqueued_at: float) -> None:
        self.cost = cost
        self.future = future  # resolves to the monotonic grant time
        self.enqueued_at = enqueued_at
        self.timeout_handle: asyncio.TimerHandle | None = None


class WaitQueue:
    """Waiters of one bucket in arrival order, woken by a single timer."""

    __slots__ = ("_clock", "_limiter_of", "_loop", "_queue", "_queued_cost", "_timer", "live")

    def __init__(
        self,
        limiter_of: Callable[[], BucketLimiter],
        clock: Callable[[], float],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # The limiter is looked up at each wake: a reload may replace it.
        self._limiter_of = limiter_of
        self._clock = clock
        self._loop = loop
        # Most buckets never queue anyone: the deque (~600 bytes) is made on first use.
        self._queue: deque[Waiter] = _NO_WAITERS
        self._queued_cost: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.live = 0  # waiters not yet granted nor cancelled

    def __len__(self) -> int:
        return self.live

    def estimate(self, cost: dict[str, float], now: float) -> float:
        """Seconds until `cost` could be granted behind everyone already waiting.

        O(the bucket's units): no copy of the queued total, no scan of the waiters.
        """
        if not self.live:
            return self._limiter_of().delay_for(cost, now)
        return self._limiter_of().delay_behind(self._queued_cost, cost, now)

    def push(self, cost: dict[str, float], now: float) -> Waiter:
        waiter = Waiter(cost, self._loop.create_future(), now)
        if self._queue is _NO_WAITERS:
            self._queue = deque()
        self._queue.append(waiter)
        self.live += 1
        queued = self._queued_cost
        for unit, amount in cost.items():
            if amount > 0.0:
                queued[unit] = queued.get(unit, 0.0) + amount
        if self.live == 1:
            self.reschedule()
        return waiter

    def _forget(self, waiter: Waiter) -> None:
        self.live -= 1
        if self.live == 0:
            self._queued_cost.clear()  # no float residue after many add/subtract
        else:
            queued = self._queued_cost
            for unit, amount in waiter.cost.items():
                if amount > 0.0:
                    left = queued.get(unit, 0.0) - amount
                    # No key outlives the waiters that named it (a stream of distinct unit
                    # names must not grow this dict); below the residue of float sums, it is 0.
                    if left > _RESIDUE:
                        queued[unit] = left
                    else:
                        queued.pop(unit, None)
        if waiter.timeout_handle is not None:
            waiter.timeout_handle.cancel()

    def cancel(self, waiter: Waiter, exc: BaseException | None = None) -> None:
        """Take a waiting request out (client gone, or timed out with `exc`); it consumes nothing."""
        if waiter.future.done():
            return
        was_head = bool(self._queue) and self._queue[0] is waiter
        self._forget(waiter)
        if exc is None:
            waiter.future.cancel()
        else:
            waiter.future.set_exception(exc)
        if was_head:
            # The next one may be grantable now, but not before this batch of cancellations
            # ends: a client that drops many waiters at once must not be granted its own
            # next waiters (consuming permits) while the rest are being cancelled.
            self._loop.call_soon(self.reschedule)
        elif len(self._queue) > 2 * self.live + _COMPACT_SLACK:
            # Cancelled waiters behind a slow head are removed lazily; when they pile up
            # (a rate cut after many queued, then mass timeouts), drop them all at once.
            self._queue = deque(w for w in self._queue if not w.future.done())

    def pending_cost(self) -> dict[str, float]:
        return dict(self._queued_cost)

    def reschedule(self) -> None:
        """Serve what can be served now and arm the timer for the next head (after rate changes too)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue = self._queue
        while queue and queue[0].future.done():
            queue.popleft()  # cancelled ones are removed lazily
        if not queue:
            return
        now = self._clock()
        limiter = self._limiter_of()
        while queue:
            head = queue[0]
            if head.future.done():
                queue.popleft()
                continue
            delay = limiter.try_take(head.cost, now)
            if delay > 0.0:
                self._timer = self._loop.call_later(delay, self.reschedule)
                return
            queue.popleft()
            self._forget(head)
            head.future.set_result(now)

    def fail_all(self, exc: BaseException) -> None:
        """Answer every waiter with `exc` (shutdown, bucket removed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.future.done():
                self._forget(waiter)
                waiter.future.set_exception(exc)
