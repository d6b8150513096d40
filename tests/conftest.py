"""Shared fixtures: real daemon processes (`daemon_factory`, `module_daemon_factory`), short
socket dirs, a fake clock and an event loop whose timers run on it (`loop`).

Both daemon fixtures are a `daemons.DaemonLauncher` (see its docstring): the one way tests
start a real `ratelimitd serve`. At teardown every daemon still running gets SIGTERM and
must exit 0 within STOP_TIMEOUT seconds, and none may have died unexpectedly, else the test
(or, for the module-scoped one, the module's last test) fails.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from daemons import DaemonLauncher

from ratelimitd.daemon.clock import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator


def _short_dir() -> Path:
    """A fresh directory with a short path (AF_UNIX paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="rlt-", dir="/tmp"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = _short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon_factory(tmp_path: Path, short_dir: Path) -> Iterator[DaemonLauncher]:
    """Start real daemons for one test (config and logs in `tmp_path`)."""
    launcher = DaemonLauncher(tmp_path, short_dir)
    yield launcher
    if problems := launcher.close():
        pytest.fail("\n".join(problems))


@pytest.fixture(scope="module")
def module_daemon_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonLauncher]:
    """Start real daemons shared by a module's tests (one daemon, many read-only checks)."""
    socket_dir = _short_dir()
    launcher = DaemonLauncher(tmp_path_factory.mktemp("daemons"), socket_dir)
    try:
        yield launcher
    finally:
        problems = launcher.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loop(fake_clock: FakeClock) -> Iterator[asyncio.AbstractEventLoop]:
    """A new event loop whose `time()` is `fake_clock`: timers fire when the test advances it.

    Run what is due with `support.run_due(loop)`.
    """
    loop = asyncio.new_event_loop()
    loop.time = fake_clock.monotonic  # type: ignore[method-assign]  # timers run on fake time
    yield loop
    loop.close()
