"""The kernel's word on who is at the other end of a Unix socket: `SO_PEERCRED` (+ groups).

Shell: used by the daemon to identify clients and by clients to check the daemon.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from typing import Final, Protocol

from ratelimitd.core.peers import Peer

__all__ = ("SocketLike", "peer_of")

_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid
# Linux >= 4.13; not named by the socket module of every Python.
_SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)


class SocketLike(Protocol):
    """A socket, or the socket-like object an asyncio (or uvloop) transport exposes."""

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


def peer_of(sock: SocketLike) -> Peer:
    """The peer's pid, uid, gid and supplementary groups.

    :raises OSError: not a connected Unix socket (or not Linux).
    """
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOTSUP, "peer credentials need Linux (SO_PEERCRED)")
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid=pid, uid=uid, gid=gid, groups=_groups(sock))


def _groups(sock: SocketLike) -> frozenset[int]:
    for size in (256, 65536):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue  # more groups than the buffer holds
            return frozenset()  # an older kernel: the primary gid only
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return frozenset()
