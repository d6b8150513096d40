"""The one way tests start a real daemon: `DaemonLauncher` and the `RunningDaemon` it returns.

`launcher(config_toml)` writes the TOML into the launcher's work directory, starts
`python -m ratelimitd serve --socket S --config F --no-http` as a real subprocess with a
clean environment (no RATELIMITD_*, no systemd variables; `env` adds to it), and returns
once the daemon answers `ping` (bounded polling, no fixed sleep). A `RunningDaemon` can be
stopped (SIGTERM), killed (SIGKILL, leaving its socket file behind as a crash would) and
restarted on the same socket, config and state file. `launcher.close()` (the fixtures in
conftest.py call it) sends SIGTERM to every daemon still running, which must exit 0 within
STOP_TIMEOUT seconds, else it is killed and the test fails; a daemon that died on its own
during a test fails it too, unless the test said it expected the exit (`stop`, `kill`,
`wait_exit`).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostile import as_user_command
from support import NdjsonClient, clean_env, rss_kib, wait_for

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from hostile import ThrowawayUser

__all__ = (
    "RATELIMITD_SCRIPT",
    "STARTUP_TIMEOUT",
    "STOP_TIMEOUT",
    "DaemonFactory",
    "DaemonLauncher",
    "RunningDaemon",
)

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 3.0
# The console script systemd's units run; `script=True` starts the daemon through it.
RATELIMITD_SCRIPT = str(Path(sys.executable).parent / "ratelimitd")
_HTTP_SERVING = re.compile(r"http: serving .* on 127\.0\.0\.1:(\d+)")


class RunningDaemon:
    """A `ratelimitd serve` subprocess and what a test needs to drive it."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        socket_path: Path,
        config_path: Path | None,
        log_path: Path,
        http: bool,
        user: ThrowawayUser | None = None,
    ) -> None:
        self.user = user
        self.command = list(command)
        self.env = dict(env)
        self.cwd = cwd
        self.socket_path = socket_path
        self.config_path = config_path
        self.log_path = log_path
        self.http = http
        self.exit_expected = False
        self.stop_requested = False  # a test sent SIGTERM/SIGINT: a second one would kill it
        self._clients: list[NdjsonClient] = []
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            if self.user is not None:  # as another user (tests/hostile.py)
                assert self.command[:2] == [sys.executable, "-m"], "as a user: python -m only"
                return subprocess.Popen(
                    as_user_command(self.user, *self.command[1:]),
                    env={**self.env, "HOME": str(self.user.home)},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.user.home,
                )
            return subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.cwd
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- start and stop ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Return once a `ping` is answered (and, with HTTP, its port logged); fail if it exits."""
        deadline = time.monotonic() + timeout
        while not self._answers_ping() or (self.http and self._logged_http_port() is None):
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not answer within {timeout} s:\n{self.log()}")
            try:
                # Doubles as the poll interval and as crash detection.
                code = self.proc.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"the daemon exited with {code} while starting:\n{self.log()}")

    def _answers_ping(self) -> bool:
        try:
            with NdjsonClient.connect(self.socket_path, timeout=1.0) as client:
                return client.request("ping").get("ok") is True
        except (OSError, AssertionError, ValueError):
            return False

    def restart(self, *, ready: bool = True) -> RunningDaemon:
        """Start the same command again (same socket, config, state file, environment, log)."""
        assert self.proc.poll() is not None, "still running: stop or kill it first"
        self.exit_expected = False
        self.stop_requested = False
        self.proc = self._spawn()
        if ready:
            self.wait_ready()
        return self

    def send_signal(self, sig: signal.Signals) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stop_requested = True
        self.proc.send_signal(sig)

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

    def kill(self) -> int:
        """SIGKILL: no shutdown, the socket file stays behind; the exit code (-9)."""
        self.exit_expected = True
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(timeout=STOP_TIMEOUT)

    # -- talking to it ----------------------------------------------------------------------------

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

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()

    # -- what it says -----------------------------------------------------------------------------

    def log(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far (all its runs)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, needle: str, *, count: int = 1, timeout: float = 5.0) -> None:
        wait_for(lambda: self.log().count(needle) >= count, timeout=timeout, what=f"log line {needle!r}")

    def _logged_http_port(self) -> int | None:
        found = _HTTP_SERVING.findall(self.log())
        return int(found[-1]) if found else None

    @property
    def http_port(self) -> int:
        """The loopback port the HTTP server bound (started with `http=True`, port 0)."""
        port = self._logged_http_port()
        assert port is not None, f"the daemon logged no HTTP port:\n{self.log()}"
        return port

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    # -- its config -------------------------------------------------------------------------------

    def write_config(self, text: str) -> None:
        assert self.config_path is not None, "this daemon was started without --config"
        self.config_path.write_text(text)

    def reload(self, text: str, *, outcome: str = "configuration reloaded") -> None:
        """Write a new config, send SIGHUP and wait until the daemon logs `outcome`."""
        before = self.log().count(outcome)
        self.write_config(text)
        self.send_signal(signal.SIGHUP)
        self.wait_for_log(outcome, count=before + 1)


class DaemonLauncher:
    """Starts daemons with config and logs in `work_dir`, sockets in `socket_dir` (short paths).

    Call it with the TOML text of the config. `config=None` starts without `--config`
    (embedded default, or `$RATELIMITD_CONFIG` in `env`). `env` adds variables to the clean
    environment (feature gates, NOTIFY_SOCKET); `args` adds flags after `serve`;
    `socket_path` defaults to a new path in `socket_dir`; with `socket_flag=False` no
    `--socket` is passed and `socket_path` is where the test expects the daemon to bind (its
    precedence rules); `http=True` serves HTTP on a free loopback port (`http_port`) instead
    of passing `--no-http`; `script=True` runs the `ratelimitd` console script instead of
    `python -m ratelimitd`; `ready=False` returns at once (for daemons that must refuse to
    start: then call `wait_exit`, or that a test watches start by other means).
    """

    def __init__(self, work_dir: Path, socket_dir: Path) -> None:
        self.work_dir = work_dir
        self.socket_dir = socket_dir
        self.started: list[RunningDaemon] = []

    def __call__(
        self,
        config: str | None = "",
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        socket_path: Path | None = None,
        socket_flag: bool = True,
        http: bool = False,
        script: bool = False,
        ready: bool = True,
        user: ThrowawayUser | None = None,
    ) -> RunningDaemon:
        index = len(self.started)
        sock = socket_path or self.socket_dir / f"d{index}.sock"
        command = [RATELIMITD_SCRIPT] if script else [sys.executable, "-m", "ratelimitd"]
        command += ["serve", "--http-port", "0"] if http else ["serve", "--no-http"]
        if socket_flag:
            command += ["--socket", str(sock)]
        config_path: Path | None = None
        if config is not None:
            config_path = (user.home if user is not None else self.work_dir) / f"daemon{index}.toml"
            config_path.write_text(config)
            command += ["--config", str(config_path)]
        command += list(args)
        daemon = RunningDaemon(
            command,
            env=clean_env(env),
            cwd=self.work_dir,
            socket_path=sock,
            config_path=config_path,
            log_path=self.work_dir / f"daemon{index}.log",
            http=http,
            user=user,
        )
        self.started.append(daemon)
        if ready:
            daemon.wait_ready()
        return daemon

    def close(self) -> list[str]:
        """Stop every daemon still running; what went wrong (empty when all is well)."""
        problems: list[str] = []
        for daemon in self.started:
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
        return problems


# The fixtures' type: tests annotate `daemon_factory: DaemonFactory`.
DaemonFactory = DaemonLauncher
