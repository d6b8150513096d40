"""A real `ratelimitd serve` process on a temporary socket, for the client and CLI tests.

`DaemonProcess(tmp_path, config_text)` writes the config, `start()` runs
`python -m ratelimitd serve --socket ... --config ...` and returns once the socket
answers a `ping`; `stop()` sends SIGTERM (SIGKILL after a bound) and `kill()`
sends SIGKILL, leaving a stale socket file behind as a crash would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("STARTUP_BOUND", "DaemonProcess", "running_daemon")

STARTUP_BOUND = 20.0  # seconds; never reached when things work


class DaemonProcess:
    def __init__(self, directory: Path, config_text: str) -> None:
        self.directory = directory
        # A short directory of its own: AF_UNIX paths are limited to 107 bytes.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="rl-"))
        self.socket_path = self.socket_dir / "ratelimitd.sock"
        self.config_path = directory / "ratelimitd.toml"
        self.config_path.write_text(config_text, "utf-8")
        self.log_path = directory / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> DaemonProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RATELIMITD_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ratelimitd",
                    "serve",
                    "--socket",
                    str(self.socket_path),
                    "--config",
                    str(self.config_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Return once a `ping` on the socket is answered; fail if the process exits."""
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_BOUND
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            if self._answers_ping():
                return
            time.sleep(0.02)  # polling for start-up, not waiting for a rate
        raise AssertionError(f"daemon not ready after {STARTUP_BOUND} s:\n{self.log()}")

    def _answers_ping(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b'{"op":"ping","id":"ready?"}\n')
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
            except OSError:
                return False
        return bool(json.loads(data).get("ok"))

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        return self._end(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL: no shutdown, the socket file stays behind."""
        return self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> int:
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def cleanup(self) -> None:
        """Remove the socket directory (after `stop`)."""
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_daemon(directory: Path, config_text: str) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(directory, config_text)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        daemon.cleanup()
