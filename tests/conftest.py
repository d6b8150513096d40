"""Shared fixtures: real daemon processes (`daemon_factory`), short socket dirs, a fake clock.

`daemon_factory(config_toml)` writes the TOML into `tmp_path`, starts
`python -m ratelimitd serve --socket S --config F --no-http` as a real subprocess with
a clean environment (no RATELIMITD_*, no systemd variables), and returns once the daemon
answers `ping` (bounded polling, no fixed sleep). At teardown every daemon still running
gets SIGTERM and must exit 0 within STOP_TIMEOUT seconds, else it is killed and the test
fails; a daemon that died on its own during a test fails it too, unless the test said it
expected the exit (`RunningDaemon.wait_exit`).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest
from support import NdjsonClient, clean_env, rss_kib, wait_for

from ratelimitd.clock import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 3.0


class RunningDaemon:
    """A `ratelimitd serve` subprocess and what a test needs to drive it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        socket_path: Path,
        config_path: Path | None,
        log_path: Path,
    ) -> None:
        self.proc = proc
        self.socket_path = socket_path
        self.config_path = config_path
        self.log_path = log_path
        self.exit_expected = False
        self.stop_requested = False  # a test sent SIGTERM/SIGINT: a second one would kill it
        self._clients: list[NdjsonClient] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, *, timeout: float = 5.0) -> NdjsonClient:
        """A new connection, closed at teardown if the test did not close it."""
        client = NdjsonClient.connect(self.socket_path, timeout=timeout)
        self._clients.append(client)
        return client

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request on a fresh connection."""
        with NdjsonClient.connect(self.socket_path) as client:
            return client.request(op, **fields)

    def bucket_status(self, provider: str, bucket: str = "default") -> dict[str, Any]:
        response = self.request("status", provider=provider)
        assert response["ok"] is True, response
        status: dict[str, Any] = response["providers"][provider]["buckets"][bucket]
        return status

    def log(self) -> str:
        """Everything the daemon wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, *, count: int = 1, timeout: float = 5.0) -> None:
        wait_for(lambda: self.log().count(needle) >= count, timeout=timeout, what=f"log line {needle!r}")

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def send_signal(self, sig: signal.Signals) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stop_requested = True
        self.proc.send_signal(sig)

    def write_config(self, text: str) -> None:
        assert self.config_path is not None, "this daemon was started without --config"
        self.config_path.write_text(text)

    def reload(self, text: str, *, outcome: str = "configuration reloaded") -> None:
        """Write a new config, send SIGHUP and wait until the daemon logs `outcome`."""
        before = self.log().count(outcome)
        self.write_config(text)
        self.send_signal(signal.SIGHUP)
        self.wait_for_log(outcome, count=before + 1)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to end (the test expects it to); its exit code."""
        self.exit_expected = True
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then the exit code (raises subprocess.TimeoutExpired when it hangs)."""
        self.exit_expected = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()


class DaemonFactory(Protocol):
    def __call__(
        self,
        config: str | None = "",
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        socket_path: Path | None = None,
        socket_flag: bool = True,
        ready: bool = True,
    ) -> RunningDaemon: ...


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path (AF_UNIX paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rlt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _wait_ready(daemon: RunningDaemon) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            with NdjsonClient.connect(daemon.socket_path, timeout=1.0) as client:
                if client.request("ping").get("ok") is True:
                    return
        except (OSError, AssertionError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the daemon did not answer within {STARTUP_TIMEOUT} s:\n{daemon.log()}")
        try:
            # Doubles as the poll interval and as crash detection.
            code = daemon.proc.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"the daemon exited with {code} while starting:\n{daemon.log()}")


@pytest.fixture
def daemon_factory(tmp_path: Path, short_dir: Path) -> Iterator[DaemonFactory]:
    """Start real daemons; see the module docstring. Call it with the TOML text of the config.

    `config=None` starts without `--config` (embedded default, or `$RATELIMITD_CONFIG` in `env`).
    `env` adds variables to the clean environment; `args` adds flags after `serve`;
    `socket_path` defaults to a new path in a short directory; with `socket_flag=False` no
    `--socket` is passed and `socket_path` is where the test expects the daemon to bind (its
    precedence rules); `ready=False` returns at once
    (for daemons that must refuse to start: then call `wait_exit`).
    """
    started: list[RunningDaemon] = []

    def start(
        config: str | None = "",
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        socket_path: Path | None = None,
        socket_flag: bool = True,
        ready: bool = True,
    ) -> RunningDaemon:
        index = len(started)
        sock = socket_path or short_dir / f"d{index}.sock"
        command = [sys.executable, "-m", "ratelimitd", "serve", "--no-http"]
        if socket_flag:
            command += ["--socket", str(sock)]
        config_path: Path | None = None
        if config is not None:
            config_path = tmp_path / f"daemon{index}.toml"
            config_path.write_text(config)
            command += ["--config", str(config_path)]
        command += list(args)
        log_path = tmp_path / f"daemon{index}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command, env=clean_env(env), stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp_path
            )
        daemon = RunningDaemon(proc, socket_path=sock, config_path=config_path, log_path=log_path)
        started.append(daemon)
        if ready:
            _wait_ready(daemon)
        return daemon

    yield start

    problems: list[str] = []
    for daemon in started:
        daemon.close_clients()
        code = daemon.proc.poll()
        if code is not None:
            if not daemon.exit_expected:
                problems.append(f"daemon {daemon.pid} died during the test with {code}:\n{daemon.log()}")
            continue
        if not daemon.stop_requested:
            daemon.proc.send_signal(signal.SIGTERM)
        try:
            code = daemon.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait()
            problems.append(f"daemon {daemon.pid} ignored SIGTERM for {STOP_TIMEOUT} s:\n{daemon.log()}")
            continue
        if code != 0:
            problems.append(f"daemon {daemon.pid} exited with {code} after SIGTERM:\n{daemon.log()}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
