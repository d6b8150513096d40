"""The bounded history of what a bucket's learner changed, and why.

Pure: no I/O, no clock reads. Times are monotonic; `snapshot` converts to wall time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ("HistoryEntry", "new_history")


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    """One change: `kind` is the decision's action or a state event (`reset`, `noise`, ...)."""

    at_monotonic: float
    kind: str
    status: int | None
    factor_before: float
    factor_after: float
    reason: str

    def as_dict(self, now: float, wall: float) -> dict[str, object]:
        """JSON-able, with `at` as unix time (wall = the wall clock at monotonic `now`)."""
        return {
            "at": round(wall + (self.at_monotonic - now), 3),  # ms: stable across calls
            "kind": self.kind,
            "status": self.status,
            "factor_before": self.factor_before,
            "factor_after": self.factor_after,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object], now: float, wall: float) -> HistoryEntry:
        """Inverse of `as_dict`; raises ValueError/TypeError on a malformed entry."""
        at = data["at"]
        status = data.get("status")
        before = data["factor_before"]
        after = data["factor_after"]
        if not isinstance(at, int | float) or not isinstance(before, int | float):
            raise TypeError("history entry: at/factor_before must be numbers")
        if not isinstance(after, int | float):
            raise TypeError("history entry: factor_after must be a number")
        if status is not None and not isinstance(status, int):
            raise TypeError("history entry: status must be an integer or null")
        return cls(
            at_monotonic=now - (wall - float(at)),
            kind=str(data["kind"]),
            status=status,
            factor_before=float(before),
            factor_after=float(after),
            reason=str(data["reason"]),
        )


def new_history(size: int) -> deque[HistoryEntry]:
    """An empty history keeping the last `size` entries (the issue's bound is 50)."""
    return deque(maxlen=max(1, size))
