"""Is the process serving the socket a daemon this client may trust? (`SO_PEERCRED`)

Another local user could bind a socket where clients look for the daemon (for example
by creating /tmp/ratelimitd-UID first) and answer every acquire at once. Before the
first request on a connection, the clients ask the kernel which user serves it and
accept only: their own user, root, the user named by `daemon_user` (or
`$RATELIMITD_DAEMON_USER`), and the packaged units' `ratelimitd` user when it exists.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import struct
import sys
from typing import TYPE_CHECKING, Final

from ratelimitd.client.errors import UntrustedDaemon

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("PACKAGED_USER", "check_daemon", "peer_closed", "trusted_daemon_uids")

#: The user the packaged systemd units run the daemon as.
PACKAGED_USER: Final = "ratelimitd"
_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _uid_of(user: str | int) -> int:
    if isinstance(user, int):
        return user
    if user.isdigit():
        return int(user)
    return pwd.getpwnam(user).pw_uid


def _name(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def trusted_daemon_uids(daemon_user: str | int | None, environ: Mapping[str, str]) -> frozenset[int]:
    """This user, root, `daemon_user` (else `$RATELIMITD_DAEMON_USER`) and `ratelimitd` if it exists.

    :raises ValueError: `daemon_user` names no user.
    """
    uids = {os.geteuid(), 0}
    chosen = daemon_user if daemon_user is not None else environ.get("RATELIMITD_DAEMON_USER") or None
    if chosen is not None:
        try:
            uids.add(_uid_of(chosen))
        except KeyError:
            raise ValueError(f"daemon_user: no such user {chosen!r}") from None
    with contextlib.suppress(KeyError):
        uids.add(pwd.getpwnam(PACKAGED_USER).pw_uid)
    return frozenset(uids)


def check_daemon(sock: socket.socket, socket_path: str, trusted: frozenset[int]) -> None:
    """Raise `UntrustedDaemon` unless a user in `trusted` serves the connected `sock`."""
    if not sys.platform.startswith("linux"):
        return  # SO_PEERCRED is Linux's; elsewhere the socket's directory is the protection
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    if uid in trusted:
        return
    allowed = ", ".join(_name(u) for u in sorted(trusted))
    raise UntrustedDaemon(
        socket_path,
        f"the socket is served by {_name(uid)}, which this client does not trust (trusted: "
        f"{allowed}); another user may have taken the socket path. If that user runs your "
        "ratelimitd, set RATELIMITD_DAEMON_USER (or the client's daemon_user) to it",
        uid=uid,
    )


def peer_closed(sock: socket.socket) -> bool:
    """True when the daemon has closed the connection (read without blocking or consuming)."""
    timeout = sock.gettimeout()
    try:
        if timeout != 0.0:
            sock.setblocking(False)  # with a timeout, Python would poll before recv
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        if timeout != 0.0:
            sock.settimeout(timeout)
