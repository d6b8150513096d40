"""What each grant cost, by permit, so a report's `used` can settle the difference.

Pure: no I/O, no clock reads; `now` is monotonic seconds given by the caller.

A bucket's permits are increasing integers (`BucketLearner.on_grant`), so the ledger is
a deque in permit order: remembering is an append, forgetting the oldest a popleft, and
finding a permit is an index computation (checked, with a binary search when permits were
not contiguous, e.g. after the learner was restored from saved state). A grant is
remembered for at least `keep` seconds (protocol.md: at least the last 10 minutes) unless
the bucket has granted more than `max_entries` since: memory stays bounded under any load.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("KEEP_SECONDS", "MAX_ENTRIES", "GrantLedger", "settlement")

#: How long a grant's cost is remembered (protocol.md, report.settled).
KEEP_SECONDS: Final = 600.0
#: Grants remembered per bucket at most: 10 minutes at ~109 grants per second; about 5 MB.
MAX_ENTRIES: Final = 65536
# Forgotten grants are dropped from the lists once there are this many and they are at
# least an eighth of it: memory stays within 1/8 of the live entries, and each drop's copy
# costs a few bytes per grant.
_COMPACT_AFTER: Final = 1024


class GrantLedger:
    """The costs of a bucket's recent grants; each can be settled once."""

    __slots__ = ("_costs", "_head", "_permits", "_times", "keep", "max_entries")

    def __init__(self, *, keep: float = KEEP_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.keep = keep
        self.max_entries = max_entries
        # One grant per index, oldest first, permits increasing; the indexes before `_head`
        # are forgotten. Three lists, not a deque of tuples: a grant then allocates nothing
        # the garbage collector tracks (a tuple per grant kept it busy, about 100 ns a grant),
        # and a settled permit is found by index in O(1) (a deque's middle is O(n)).
        self._permits: list[int] = []
        self._times: list[float] = []
        self._costs: list[dict[str, float] | None] = []  # None once settled or forgotten
        self._head = 0

    def __len__(self) -> int:
        return len(self._permits) - self._head

    def remember(self, permit: int, cost: dict[str, float], now: float) -> None:
        """Note the cost of grant `permit` made at `now` (permits must increase)."""
        permits = self._permits
        times = self._times
        costs = self._costs
        permits.append(permit)
        times.append(now)
        costs.append(cost)
        head = start = self._head
        horizon = now - self.keep
        # Stops at the grant just added at the latest: it is never older than `keep`.
        while len(permits) - head > self.max_entries or times[head] < horizon:
            costs[head] = None  # its cost is freed now
            head += 1
        if head != start:
            if head >= _COMPACT_AFTER and head * 8 >= len(permits):
                del permits[:head], times[:head], costs[:head]  # now and then, a copy of the rest
                head = 0
            self._head = head

    def take(self, permit: int) -> dict[str, float] | None:
        """The cost of grant `permit`, once: None when unknown, forgotten or already settled."""
        permits = self._permits
        head = self._head
        if head >= len(permits):
            return None
        index = head + permit - permits[head]
        if not head <= index < len(permits) or permits[index] != permit:
            # Not contiguous (a restored learner numbers from elsewhere): search.
            index = bisect.bisect_left(permits, permit, lo=head)
            if index >= len(permits) or permits[index] != permit:
                return None
        cost = self._costs[index]
        self._costs[index] = None
        return cost


def settlement(granted: Mapping[str, float], used: Mapping[str, float]) -> dict[str, float]:
    """Per unit of `used`: how much more (> 0) or less (< 0) was used than granted.

    A unit the grant did not name was granted 0; a granted unit absent from `used` is
    left as it was (the caller did not measure it).
    """
    return {unit: amount - granted.get(unit, 0.0) for unit, amount in used.items()}
