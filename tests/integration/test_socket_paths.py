"""The socket's directory and file: another user cannot take them over or make us remove theirs.

Against the real daemon. The cross-user cases run the daemon as a throwaway user
(tests/hostile.py) whose default socket directory, /tmp/ratelimitd-UID, another user
created first.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hostile import ThrowawayUser, throwaway_user

if TYPE_CHECKING:
    from collections.abc import Iterator

    from daemons import DaemonFactory

STARTUP_FAILURE = 3
NOBODY = 65534
# No socket variables: the daemon falls back to /tmp/ratelimitd-UID (protocol.md, Paths).
NO_SOCKET_ENV = {"XDG_RUNTIME_DIR": "", "RUNTIME_DIRECTORY": ""}


@pytest.fixture
def user() -> Iterator[ThrowawayUser]:
    with throwaway_user() as made:
        yield made


@pytest.fixture
def default_dir(user: ThrowawayUser) -> Iterator[Path]:
    """The throwaway user's default socket directory, removed before and after."""
    path = Path(f"/tmp/ratelimitd-{user.uid}")
    shutil.rmtree(path, ignore_errors=True)  # a uid reused from an earlier throwaway user
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_socket_directory_is_created_0700(daemon_factory: DaemonFactory, short_dir: Path) -> None:
    path = short_dir / "made-here" / "r.sock"
    daemon = daemon_factory(socket_path=path)
    assert daemon.request("ping")["ok"] is True
    made = os.stat(path.parent)
    assert stat.S_IMODE(made.st_mode) == 0o700
    assert made.st_uid == os.geteuid()


def test_socket_dir_mode_is_configurable(daemon_factory: DaemonFactory, short_dir: Path) -> None:
    path = short_dir / "group" / "r.sock"
    daemon_factory('[server]\nsocket_dir_mode = "0750"\n', socket_path=path)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750


def test_default_directory_is_made_by_the_daemons_user(
    daemon_factory: DaemonFactory, user: ThrowawayUser, default_dir: Path
) -> None:
    sock = default_dir / "ratelimitd.sock"
    daemon = daemon_factory(None, socket_flag=False, socket_path=sock, env=NO_SOCKET_ENV, user=user)
    assert daemon.request("ping")["ok"] is True
    made = os.stat(default_dir)
    assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (user.uid, 0o700)


def test_a_directory_another_user_created_first_is_refused(
    daemon_factory: DaemonFactory, user: ThrowawayUser, default_dir: Path
) -> None:
    # The hijack: another user makes /tmp/ratelimitd-UID (world-writable) before the victim.
    default_dir.mkdir(mode=0o777)
    default_dir.chmod(0o777)
    os.chown(default_dir, NOBODY, NOBODY)
    daemon = daemon_factory(
        None,
        socket_flag=False,
        socket_path=default_dir / "ratelimitd.sock",
        env=NO_SOCKET_ENV,
        user=user,
        ready=False,
    )
    assert daemon.wait_exit(timeout=15) == STARTUP_FAILURE
    log = daemon.log()
    assert f"socket directory {default_dir} is owned by uid {NOBODY}" in log, log
    assert not (default_dir / "ratelimitd.sock").exists()


def test_a_directory_others_can_write_is_refused(
    daemon_factory: DaemonFactory, user: ThrowawayUser, default_dir: Path
) -> None:
    default_dir.mkdir()
    default_dir.chmod(0o777)  # the daemon's own user owns it, but anyone could swap the socket
    os.chown(default_dir, user.uid, user.gid)
    daemon = daemon_factory(
        None,
        socket_flag=False,
        socket_path=default_dir / "ratelimitd.sock",
        env=NO_SOCKET_ENV,
        user=user,
        ready=False,
    )
    assert daemon.wait_exit(timeout=15) == STARTUP_FAILURE
    assert "is writable by others (mode 0777)" in daemon.log()


def test_a_group_writable_directory_is_refused(daemon_factory: DaemonFactory, short_dir: Path) -> None:
    shared = short_dir / "shared"
    shared.mkdir()
    shared.chmod(0o770)
    daemon = daemon_factory(socket_path=shared / "r.sock", ready=False)
    assert daemon.wait_exit(timeout=15) == STARTUP_FAILURE
    assert "is writable by its group (mode 0770)" in daemon.log()


def test_stopping_leaves_another_daemons_socket_alone(daemon_factory: DaemonFactory, short_dir: Path) -> None:
    path = short_dir / "one.sock"
    first = daemon_factory(socket_path=path)
    path.unlink()  # e.g. an operator cleaning up; the first daemon keeps running
    second = daemon_factory(socket_path=path)
    assert first.stop() == 0
    assert "no longer this daemon's socket" in first.log()
    assert path.exists()
    assert second.request("ping")["ok"] is True
    assert second.stop() == 0
    assert not path.exists()  # its own socket, removed
