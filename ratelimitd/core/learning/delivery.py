"""What the provider delivers: successes per second over a recent, unpaused window.

Pure: no I/O, no clock reads. One `DeliveryModel` per bucket (inside the adaptive rules).

When a bucket sends faster than the provider allows, the successes per second ARE the
provider's rate (as BBR reads a path's bandwidth from what it delivered). The reading is
trusted only over a steady window: `window` seconds without a whole-bucket pause (a pause
lets the provider's own bucket refill, and the burst that follows reads too high), with at
least `MIN_SUCCESSES` successes, and at least `MIN_SHARE` of the bucket's rate: a bucket
whose callers ask for much less than its rate delivers what it was asked, which says nothing
about the provider (a provider that drops by more than half is followed by the streak table
first). A pause that begins at the very moment of the reading (the 429 being judged started
it) does not count.
"""

from __future__ import annotations

from collections import deque

__all__ = ("MIN_SHARE", "MIN_SUCCESSES", "DeliveryModel")

MIN_SUCCESSES = 10  # successes in the window before its rate is trusted
MIN_SHARE = 0.5  # a reading under half the bucket's rate is the callers' demand, not trusted

# Shared, always empty: stand-ins until a bucket records its first success or pause.
_NO_TIMES: deque[float] = deque(maxlen=0)
_NO_PAUSES: deque[tuple[float, float]] = deque(maxlen=0)
_EPS = 1e-9


class DeliveryModel:
    """Success times and whole-bucket pauses of the last `window` seconds."""

    # Slots: one per bucket; most buckets never see a 429, so the deques (~600 bytes each)
    # are made on first use.
    __slots__ = ("_pauses", "_times", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._times: deque[float] = _NO_TIMES
        self._pauses: deque[tuple[float, float]] = _NO_PAUSES

    def on_success(self, now: float) -> None:
        times = self._times
        if times is _NO_TIMES:
            times = self._times = deque()
        times.append(now)
        # Bounded by the window even if nothing ever reads it.
        horizon = now - self.window
        while times[0] < horizon:
            times.popleft()

    def on_pause(self, start: float, end: float) -> None:
        """A whole-bucket pause over [start, end) (extensions merge into one)."""
        pauses = self._pauses
        if pauses is _NO_PAUSES:
            pauses = self._pauses = deque()
        if pauses and pauses[-1][1] >= start:
            start = min(start, pauses[-1][0])
            pauses.pop()
        pauses.append((start, end))
        horizon = start - self.window
        while pauses[0][1] < horizon:
            pauses.popleft()

    def steady_rate(self, now: float, rate: float) -> float | None:
        """Successes per second over the last `window`, or None when the window is not steady.

        `rate`: the bucket's rate limit now (requests/s).
        """
        since = now - self.window
        for start, end in self._pauses:
            if end > since and start < now - _EPS:
                return None  # a pause (not one starting now) in the window
        times = self._times
        while times and times[0] < since:
            times.popleft()
        delivered = len(times) / self.window
        if len(times) < MIN_SUCCESSES or delivered < MIN_SHARE * rate:
            return None
        return delivered

    def kept(self) -> int:
        """Success times held (bounded by the window)."""
        return len(self._times)
