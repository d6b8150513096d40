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
from collections import deque
from operator import itemgetter
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("KEEP_SECONDS", "MAX_ENTRIES", "GrantLedger", "settlement")

#: How long a grant's cost is remembered (protocol.md, report.settled).
KEEP_SECONDS: Final = 600.0
#: Grants remembered per bucket at most: 10 minutes at ~109 grants per second; about 8 MB.
MAX_ENTRIES: Final = 65536


# One grant: (permit, monotonic time granted, cost or None once settled). A tuple, not
# a class: one is built per acquire, and a tuple costs a third of a slots instance.
_Grant = tuple[int, float, "Mapping[str, float] | None"]


class GrantLedger:
    """The costs of a bucket's recent grants; each can be settled once."""

    __slots__ = ("_entries", "keep", "max_entries")

    def __init__(self, *, keep: float = KEEP_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.keep = keep
        self.max_entries = max_entries
        self._entries: deque[_Grant] = deque()  # oldest first, permits increasing

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, permit: int, cost: Mapping[str, float], now: float) -> None:
        """Note the cost of grant `permit` made at `now` (permits must increase)."""
        entries = self._entries
        entries.append((permit, now, cost))
        horizon = now - self.keep
        while len(entries) > self.max_entries or entries[0][1] < horizon:
            entries.popleft()

    def take(self, permit: int) -> Mapping[str, float] | None:
        """The cost of grant `permit`, once: None when unknown, forgotten or already settled."""
        entries = self._entries
        if not entries:
            return None
        index = permit - entries[0][0]
        if not 0 <= index < len(entries) or entries[index][0] != permit:
            # Not contiguous (a restored learner numbers from elsewhere): search.
            index = bisect.bisect_left(entries, permit, key=itemgetter(0))
            if index >= len(entries) or entries[index][0] != permit:
                return None
        permit, at, cost = entries[index]
        if cost is not None:
            entries[index] = (permit, at, None)
        return cost


def settlement(granted: Mapping[str, float], used: Mapping[str, float]) -> dict[str, float]:
    """Per unit of `used`: how much more (> 0) or less (< 0) was used than granted.

    A unit the grant did not name was granted 0; a granted unit absent from `used` is
    left as it was (the caller did not measure it).
    """
    return {unit: amount - granted.get(unit, 0.0) for unit, amount in used.items()}
