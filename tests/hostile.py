"""Another local user, for tests of what one user may do to another's daemon (and back).

Tests run as root in CI. `throwaway_user()` creates a system user with its own group and
a home directory, and removes both afterwards; `run_as(user, code)` runs Python code as
that user (`subprocess` with `user=`/`group=`, no supplementary groups) and returns what
it printed as JSON. Without root the fixtures skip: another uid cannot be made.
Both go through tests/as_user.py, which drops to the user after loading Python's modules.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import clean_env

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

__all__ = ("AS_USER", "ThrowawayUser", "as_user_command", "public_dir", "run_as", "throwaway_user")

AS_USER = str(Path(__file__).with_name("as_user.py"))


@dataclass(frozen=True, slots=True)
class ThrowawayUser:
    name: str
    uid: int
    gid: int
    home: Path


def as_user_command(user: ThrowawayUser, *args: str) -> list[str]:
    """`python as_user.py UID GID ARGS...`: ARGS (`-c CODE` or `-m MODULE ...`) run as `user`."""
    return [sys.executable, AS_USER, str(user.uid), str(user.gid), *args]


@contextlib.contextmanager
def throwaway_user() -> Iterator[ThrowawayUser]:
    """A new system user and group (`rlt-<random>`), removed at exit."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create another user (CI runs the tests as root)")
    name = f"rlt-{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
        check=True,
        capture_output=True,
    )
    home = Path(tempfile.mkdtemp(prefix="rlh-", dir="/tmp"))
    try:
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield ThrowawayUser(name, entry.pw_uid, entry.pw_gid, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        # --force: a daemon run as the user may still be stopping (its fixture ends later);
        # without it userdel refuses and the user would be left behind.
        done = subprocess.run(["userdel", "--force", name], check=False, capture_output=True, text=True)
        assert done.returncode == 0, f"userdel {name}: {done.stderr}"


def public_dir(parent: Path, name: str = "pub") -> Path:
    """A root-owned directory every user may enter (0755), for a socket others may reach."""
    parent.chmod(0o755)
    directory = parent / name
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    return directory


def run_as(
    user: ThrowawayUser,
    code: str,
    *,
    env: Mapping[str, str] | None = None,
    groups: Sequence[int] = (),
    timeout: float = 30.0,
) -> Any:
    """Run `code` as `user` (with `groups` as supplementary groups); the JSON it printed last."""
    extra = {"HOME": str(user.home), "AS_USER_GROUPS": ",".join(map(str, groups)), **(env or {})}
    done = subprocess.run(
        as_user_command(user, "-c", code),
        env=clean_env(extra),
        cwd=user.home,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"as {user.name}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"as {user.name}: printed nothing\n{done.stderr}"
    return json.loads(lines[-1])
