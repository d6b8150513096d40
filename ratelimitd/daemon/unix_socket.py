"""The daemon's Unix socket file: bound in a directory it can trust, removed only while its own.

Shell. Another local user must not be able to put their socket where clients look
for ours, nor make us unlink theirs: the socket's directory must belong to the
daemon's uid (or root) and be writable by no one else, and at stop the file is
unlinked only while it is still the inode bound here.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import socket
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("BoundSocket", "SocketInUseError", "UnsafeSocketDirError", "bind_unix_socket", "check_socket_dir")

logger = logging.getLogger(__name__)


class SocketInUseError(Exception):
    """Another live daemon answers on the socket path."""


class UnsafeSocketDirError(Exception):
    """The socket's directory belongs to another user or others can write to it."""


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def check_socket_dir(directory: Path, *, uid: int | None = None) -> None:
    """Refuse a socket directory that someone other than `uid` (default: ours) or root controls.

    :raises UnsafeSocketDirError: not a directory, owned by another user, or writable by
        group or others (they could replace the socket, or bind theirs first).
    """
    uid = os.geteuid() if uid is None else uid
    advice = "choose another --socket, or fix the directory's owner and mode"
    link = os.lstat(directory)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (uid, 0):
        raise UnsafeSocketDirError(
            f"socket directory {directory} is a symlink owned by {_user(link.st_uid)}; {advice}"
        )
    found = os.stat(directory)
    if not stat.S_ISDIR(found.st_mode):
        raise UnsafeSocketDirError(f"socket directory {directory} is not a directory; {advice}")
    if found.st_uid not in (uid, 0):
        raise UnsafeSocketDirError(
            f"socket directory {directory} is owned by {_user(found.st_uid)}, not by this daemon's "
            f"{_user(uid)} or root: another user may have created it to take over the socket; {advice}"
        )
    if found.st_mode & 0o022:
        raise UnsafeSocketDirError(
            f"socket directory {directory} is writable by "
            f"{'others' if found.st_mode & 0o002 else 'its group'} "
            f"(mode {stat.S_IMODE(found.st_mode):04o}): they could replace the socket; {advice}"
        )


def _make_socket_dir(directory: Path, mode: int) -> None:
    """Create the socket directory with exactly `mode` (not widened by the umask), if missing."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)  # no window where others could enter it
    except FileExistsError:
        return
    os.chmod(directory, mode)
    logger.info("created socket directory %s (mode %04o)", directory, mode)


@dataclass(slots=True)
class BoundSocket:
    """A listening socket bound here, with the identity of the file it created."""

    sock: socket.socket
    path: Path
    device: int
    inode: int

    def remove_file(self) -> bool:
        """Unlink the socket file if it is still the one bound here; whether it was removed."""
        try:
            found = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if (found.st_dev, found.st_ino) != (self.device, self.inode):
            logger.warning(
                "not removing %s: it is no longer this daemon's socket (another daemon bound it?)",
                self.path,
            )
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return True


def bind_unix_socket(path: Path, mode: int, *, dir_mode: int = 0o700) -> BoundSocket:
    """Bind `path`, replacing a stale socket file; refuse when a live daemon answers there.

    The directory is created with `dir_mode` when missing and must pass `check_socket_dir`.
    """
    _make_socket_dir(path.parent, dir_mode)
    check_socket_dir(path.parent)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SocketInUseError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            logger.info("replacing stale socket file %s", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            raise SocketInUseError(f"another ratelimitd is serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)  # no window where the socket is wider than `mode`
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
        found = os.lstat(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.setblocking(False)
    return BoundSocket(sock, path, found.st_dev, found.st_ino)
