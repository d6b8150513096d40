"""The one place that reads the time; the pure core takes `now` as a parameter.

`monotonic()` is for rates and deadlines; `wall()` (unix seconds) only for what
leaves the process: `paused_until`, HTTP-date `Retry-After`, persisted state.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ("Clock", "FakeClock", "SystemClock")


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    """The real clocks of the process."""

    # The C functions themselves: no Python frame per read on the hot path.
    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    def wall_to_monotonic(self, wall_time: float) -> float:
        return wall_time - self.wall() + self.monotonic()


class FakeClock:
    """A clock that moves only when told; wall time keeps a fixed offset."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds
