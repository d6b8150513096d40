"""Helpers for tests that talk to a real ratelimitd: a raw NDJSON client and process tools.

Nothing here mocks the daemon. `NdjsonClient` speaks protocol v1 (shared/spec/protocol.md)
over one Unix socket connection with blocking reads, each bounded by a deadline, so a
test never hangs and never sleeps to wait for a rate. Reuse it from any test:

    with NdjsonClient.connect(path) as client:
        assert client.request("ping")["ok"] is True
        rid = client.submit("acquire", provider="p", timeout=5)   # pipelined, no wait
        pong = client.request("ping")                              # answered before the acquire
        granted = client.response(rid)                             # matched by id
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from contextlib import ExitStack
    from types import TracebackType

__all__ = (
    "DEFAULT_TIMEOUT",
    "ConnectionClosed",
    "NdjsonClient",
    "Response",
    "assert_refuses_writes",
    "clean_env",
    "make_readonly_dir",
    "peak_rss_kib",
    "rss_kib",
    "run_due",
    "run_cli",
    "run_ok",
    "wait_for",
)

DEFAULT_TIMEOUT = 5.0
Response = dict[str, Any]


class ConnectionClosed(AssertionError):
    """The daemon closed the connection while a response was expected."""


class NdjsonClient:
    """One connection to the daemon; requests are matched to responses by `id`.

    Responses that arrive while waiting for another id are kept and handed out later,
    so pipelined requests may be answered in any order.
    """

    def __init__(self, sock: socket.socket, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock
        self.timeout = timeout
        self._buffer = b""
        self._unclaimed: list[Response] = []
        self._next_id = 0
        self.closed_by_peer = False

    @classmethod
    def connect(cls, path: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> NdjsonClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return cls(sock, timeout=timeout)

    def __enter__(self) -> NdjsonClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- sending ----------------------------------------------------------------------------------

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given (no newline added): half lines, garbage, floods."""
        self.sock.sendall(data)

    def send(self, *requests: Mapping[str, Any]) -> None:
        """Send each request as one JSON line, all in one write (pipelined)."""
        self.sock.sendall(b"".join(json.dumps(dict(r)).encode() + b"\n" for r in requests))

    def submit(self, op: str, **fields: Any) -> int:
        """Send `{"op": op, "id": <new id>, **fields}` without waiting; return the id."""
        rid = self.new_id()
        self.send({"op": op, "id": rid, **fields})
        return rid

    def ask(self, request: Mapping[str, Any]) -> Response:
        """Send `request` exactly as given (no id added) and return the next response."""
        self.send(request)
        return self.read_response()

    def request(self, op: str, *, read_timeout: float | None = None, **fields: Any) -> Response:
        """Send one request and wait (up to `read_timeout` s) for the response with its id.

        `fields` go on the wire as they are, `timeout` included.
        """
        return self.response(self.submit(op, **fields), timeout=read_timeout)

    # -- receiving --------------------------------------------------------------------------------

    def _read_line(self, deadline: float) -> Response:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no response line within the deadline (buffered: {self._buffer[:200]!r})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError as exc:
                self.closed_by_peer = True
                raise ConnectionClosed("the daemon reset the connection") from exc
            if not chunk:
                self.closed_by_peer = True
                raise ConnectionClosed(f"the daemon closed the connection (buffered: {self._buffer[:200]!r})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        response: Response = json.loads(line)
        return response

    def read_response(self, *, timeout: float | None = None) -> Response:
        """The next response in arrival order (unclaimed ones first)."""
        if self._unclaimed:
            return self._unclaimed.pop(0)
        return self._read_line(time.monotonic() + (self.timeout if timeout is None else timeout))

    def read_responses(self, count: int, *, timeout: float | None = None) -> list[Response]:
        """The next `count` responses in arrival order, all within one deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = [self._unclaimed.pop(0) for _ in range(min(count, len(self._unclaimed)))]
        while len(out) < count:
            out.append(self._read_line(deadline))
        return out

    def response(self, rid: int | str, *, timeout: float | None = None) -> Response:
        """The response whose `id` is `rid`; others read meanwhile are kept for later."""
        for i, kept in enumerate(self._unclaimed):
            if kept.get("id") == rid:
                return self._unclaimed.pop(i)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            got = self._read_line(deadline)
            if got.get("id") == rid:
                return got
            self._unclaimed.append(got)

    def has_response(self) -> bool:
        """True when a response has arrived and waits to be read; never blocks."""
        if self._unclaimed or b"\n" in self._buffer:
            return True
        self.sock.setblocking(False)
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        if not chunk:
            self.closed_by_peer = True
            return False
        self._buffer += chunk
        return b"\n" in self._buffer

    def expect_closed(self, *, timeout: float | None = None) -> bytes:
        """Read until the daemon closes the connection; return what came before the close."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        received = self._buffer
        self._buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the daemon kept the connection open (received {received[:200]!r})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed_by_peer = True
                return received
            received += chunk


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.005,
    what: str = "",
    diagnostics: Callable[[], str] = lambda: "",
) -> None:
    """Poll `predicate` until it is true; fail after `timeout` seconds, saying `diagnostics()`.

    For observing the daemon's (or another process's) state: waiter counts, RSS, log lines,
    scrapes; never for waiting out a rate: await the response itself for that.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what or predicate}\n{diagnostics()}"
            )
        time.sleep(interval)


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def peak_rss_kib(pid: int) -> int:
    """The highest resident set size `pid` has had so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without RATELIMITD_* and systemd's variables, plus `extra`."""
    dropped = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATELIMITD_") and k not in dropped}
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m ratelimitd ARGS` to completion in a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "ratelimitd", *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_ok(*argv: str) -> bool:
    """Run a system tool quietly; whether it exited 0."""
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def make_readonly_dir(directory: Path, files: Mapping[str, bytes], cleanup: ExitStack) -> str:
    """Create `directory` holding `files`, then make it really read-only; return how.

    Not root: chmod 0500. Root ignores modes, so: a tmpfs remounted read-only (EROFS),
    else chattr +i (EPERM). The caller's probe write (`assert_refuses_writes`) proves the
    directory refuses writes. `cleanup` undoes it.
    """
    directory.mkdir()
    if os.geteuid() != 0:
        for name, data in files.items():
            (directory / name).write_bytes(data)
        directory.chmod(0o500)
        cleanup.callback(directory.chmod, 0o700)
        return "chmod 0500"
    if run_ok("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(directory)):
        cleanup.callback(run_ok, "umount", "-l", str(directory))
        for name, data in files.items():
            (directory / name).write_bytes(data)
        if run_ok("mount", "-o", "remount,ro", str(directory)):
            return "read-only tmpfs"
    for name, data in files.items():
        (directory / name).write_bytes(data)
    if run_ok("chattr", "+i", str(directory)):
        cleanup.callback(run_ok, "chattr", "-i", str(directory))
        return "chattr +i"
    pytest.skip("running as root without mount or chattr: cannot make a read-only directory")


def assert_refuses_writes(directory: Path) -> None:
    with pytest.raises(OSError):  # noqa: PT011 - EROFS, EACCES or EPERM depending on mechanism
        (directory / "probe").write_bytes(b"x")


def run_due(loop: asyncio.AbstractEventLoop) -> None:
    """Run the callbacks that are ready or due at the loop's (fake) time; never waits."""
    loop.run_until_complete(asyncio.sleep(0))
