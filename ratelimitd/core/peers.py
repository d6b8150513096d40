"""Who is on the other end of a connection, whom a provider trusts, and who holds which permit.

Pure: the shell reads a peer's credentials (`SO_PEERCRED`) and passes them in. See
protocol.md, "Who may do what": a `report` that changes what other clients get and a
`reset` are accepted only from trusted peers; an untrusted peer's report counts
unless it echoes a permit granted to that same peer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = ("MAX_REMEMBERED_PERMITS", "Peer", "PermitOwners", "Trust")

#: Permits granted to untrusted peers that the daemon remembers, oldest forgotten first.
MAX_REMEMBERED_PERMITS: Final = 65536


@dataclass(frozen=True, slots=True)
class Peer:
    """A connected process, as the kernel saw it when it connected."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()  # supplementary groups (SO_PEERGROUPS), when known

    def in_group(self, gids: frozenset[int]) -> bool:
        return self.gid in gids or not gids.isdisjoint(self.groups)


@dataclass(frozen=True, slots=True)
class Trust:
    """The users and groups a provider trusts (the daemon's own uid and root always are)."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()

    def allows(self, peer: Peer) -> bool:
        return peer.uid in self.uids or peer.in_group(self.gids)


class PermitOwners:
    """Which untrusted peer (uid) got which permit; bounded, the oldest forgotten first.

    Keys are `(provider, bucket, permit)`: permit ids are unique per bucket.
    """

    __slots__ = ("_capacity", "_owners")

    def __init__(self, capacity: int = MAX_REMEMBERED_PERMITS) -> None:
        self._capacity = capacity
        # OrderedDict: dropping the oldest is O(1); a dict's next(iter()) scans the slots
        # its earlier deletions left (measured 64 µs per record once full).
        self._owners: OrderedDict[tuple[str, str, int], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def record(self, provider: str, bucket: str, permit: int, uid: int) -> None:
        owners = self._owners
        if len(owners) >= self._capacity:
            owners.popitem(last=False)
        owners[(provider, bucket, permit)] = uid

    def held_by(self, provider: str, bucket: str, permit: int | None, uid: int) -> bool:
        """True when `permit` of that bucket was granted to `uid` and is still remembered."""
        return permit is not None and self._owners.get((provider, bucket, permit)) == uid
