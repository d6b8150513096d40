"""The bounded history of what a bucket's learner changed, and why.

Pure: no I/O, no clock reads. Times are monotonic; `snapshot` converts to wall time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ("History", "HistoryEntry", "new_history")


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


class History:
    """The last `maxlen` entries, oldest first (50 by default).

    A list rather than a deque: an empty list is 56 bytes and an empty deque ~600, and
    most of a daemon's buckets never record anything (1,000 providers: ~0.5 MB saved).
    Dropping the oldest of at most 50 entries is a cheap memmove.
    """

    __slots__ = ("_entries", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self._entries: list[HistoryEntry] = []
        self.maxlen = maxlen

    def append(self, entry: HistoryEntry) -> None:
        entries = self._entries
        entries.append(entry)
        if len(entries) > self.maxlen:
            del entries[0]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[HistoryEntry]:
        return iter(self._entries)

    def __getitem__(self, index: int) -> HistoryEntry:
        return self._entries[index]


def new_history(size: int) -> History:
    """An empty history keeping the last `size` entries (at least one)."""
    return History(max(1, size))
