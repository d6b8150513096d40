"""systemd integration without a dependency: sd_notify and socket activation.

Implements the documented `$NOTIFY_SOCKET` datagram protocol (sd_notify(3)) and the
`LISTEN_FDS` / `LISTEN_PID` / `LISTEN_FDNAMES` convention (sd_listen_fds(3)). Both read
only the mapping they are given; outside systemd every call is a cheap no-op.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

__all__ = (
    "LISTEN_FDS_START",
    "Notifier",
    "listen_fds",
    "listen_fds_with_names",
    "run_watchdog",
)

logger = logging.getLogger(__name__)

#: The first passed file descriptor (SD_LISTEN_FDS_START in sd-daemon.h).
LISTEN_FDS_START = 3

_LISTEN_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def _socket_address(notify_socket: str) -> str | bytes | None:
    """`$NOTIFY_SOCKET` as an AF_UNIX address: a path, or `@name` for the abstract namespace."""
    if notify_socket.startswith("/"):
        return notify_socket
    if notify_socket.startswith("@") and len(notify_socket) > 1:
        # sd_notify(3): "@" stands for the leading NUL byte of an abstract address.
        return b"\0" + notify_socket[1:].encode()
    return None


class Notifier:
    """Send state changes to the service manager over `$NOTIFY_SOCKET`.

    Every method is a no-op when `NOTIFY_SOCKET` was not set, and none raises: a failed
    send is logged once at WARNING (later ones at DEBUG) because losing a notification
    must never take the daemon down. Sends never block the event loop (MSG_DONTWAIT).
    """

    def __init__(self, environ: Mapping[str, str], *, pid: int | None = None) -> None:
        """:param environ: the process environment (read, never changed).
        :param pid: this process's id, for `WATCHDOG_PID`; defaults to `os.getpid()`.
        """
        raw = environ.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            # vsock: and other forms of newer systemd are not supported here.
            logger.warning("NOTIFY_SOCKET=%r is not a unix socket address; not notifying", raw)
        self._pid = os.getpid() if pid is None else pid
        self._watchdog_interval = _watchdog_interval(environ, self._pid)
        self._socket: socket.socket | None = None
        self._failed_before = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (`NOTIFY_SOCKET` set to a usable address)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines in one datagram; return whether it was sent."""
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(payload, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, self._address)
        except OSError as exc:
            level = logging.DEBUG if self._failed_before else logging.WARNING
            logger.log(level, "sd_notify %r to %r failed: %s", assignments, self._address, exc)
            self._failed_before = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """`READY=1`: startup (or a reload) is finished and the socket is served."""
        return self.notify("READY=1", *_status_line(status))

    def reloading(self, status: str | None = None) -> bool:
        """`RELOADING=1` with `MONOTONIC_USEC=`; follow it with `ready()` when done.

        systemd >= 253 (`Type=notify-reload`) requires MONOTONIC_USEC next to
        RELOADING=1 to match the reload with its SIGHUP; older versions ignore it.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", *_status_line(status))

    def stopping(self, status: str | None = None) -> bool:
        """`STOPPING=1`: shutdown has begun."""
        return self.notify("STOPPING=1", *_status_line(status))

    def status(self, text: str) -> bool:
        """`STATUS=text`, shown by `systemctl status`."""
        return self.notify(*_status_line(text))

    def watchdog(self) -> bool:
        """`WATCHDOG=1`: the keep-alive ping `WatchdogSec=` expects."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds within which systemd expects a `WATCHDOG=1`, or None if no watchdog.

        Taken from `WATCHDOG_USEC`, and only when `WATCHDOG_PID` is unset or names
        this process (sd_watchdog_enabled(3)). Ping at half of it.
        """
        return self._watchdog_interval if self.enabled else None

    def close(self) -> None:
        """Close the datagram socket, if one was opened."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status_line(text: str | None) -> tuple[str, ...]:
    # A newline would start a new assignment inside the datagram.
    return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    usec_text = environ.get("WATCHDOG_USEC", "")
    pid_text = environ.get("WATCHDOG_PID", "")
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
        if pid_text and int(pid_text) != pid:
            return None
    except ValueError:
        logger.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec_text, pid_text)
        return None
    return usec / 1_000_000 if usec > 0 else None


async def run_watchdog(notifier: Notifier, interval: float) -> None:
    """Send `WATCHDOG=1` every `interval / 2` seconds until cancelled.

    It runs on the daemon's own event loop on purpose: if the loop blocks, the
    pings stop and systemd restarts the service.
    """
    period = interval / 2
    while True:
        notifier.watchdog()
        await asyncio.sleep(period)


def listen_fds_with_names(
    environ: MutableMapping[str, str], pid: int | None = None
) -> list[tuple[str, socket.socket]]:
    """Take the sockets systemd passed (sd_listen_fds_with_names(3)), with their names.

    Sockets are returned only when `LISTEN_PID` names this process; in every case the
    three `LISTEN_*` variables are removed from `environ` (pass `os.environ` to also
    unset them for child processes), so they are taken at most once. Each socket gets
    FD_CLOEXEC. A name is `LISTEN_FDNAMES`' entry, or "unknown" as in sd-daemon.

    :raises ValueError: `LISTEN_FDS` or `LISTEN_PID` is not a number, or a passed
        descriptor is not a socket.
    """
    values = {name: environ.pop(name, "") for name in _LISTEN_VARS}
    if not values["LISTEN_FDS"] or not values["LISTEN_PID"]:
        return []
    try:
        listen_pid = int(values["LISTEN_PID"])
        count = int(values["LISTEN_FDS"])
    except ValueError:
        raise ValueError(
            f"LISTEN_FDS/LISTEN_PID: must be integers, got {values['LISTEN_FDS']!r}"
            f" / {values['LISTEN_PID']!r}"
        ) from None
    if listen_pid != (os.getpid() if pid is None else pid) or count <= 0:
        return []
    names = values["LISTEN_FDNAMES"].split(":") if values["LISTEN_FDNAMES"] else []
    taken: list[tuple[str, socket.socket]] = []
    for index in range(count):
        fd = LISTEN_FDS_START + index
        name = names[index] if index < len(names) and names[index] else "unknown"
        os.set_inheritable(fd, False)
        try:
            sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
        except OSError as exc:
            if exc.errno == errno.ENOTSOCK:
                raise ValueError(f"LISTEN_FDS: descriptor {fd} ({name}) is not a socket") from exc
            raise
        taken.append((name, sock))
    return taken


def listen_fds(environ: MutableMapping[str, str], pid: int | None = None) -> list[socket.socket]:
    """The passed sockets in order (fd 3, 4, ...); see `listen_fds_with_names`."""
    return [sock for _, sock in listen_fds_with_names(environ, pid)]
