"""Socket activation end to end with the real `systemd-socket-activate`.

The activator binds the socket and waits; the first client connection makes it exec
`ratelimitd serve` in place with LISTEN_FDS=1, and that first client is served.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import NdjsonClient

if TYPE_CHECKING:
    from collections.abc import Iterator

    from daemons import DaemonFactory

RATELIMITD = str(Path(sys.executable).parent / "ratelimitd")


def _activator() -> str:
    found = shutil.which("systemd-socket-activate")
    if found is None:
        pytest.fail("systemd-socket-activate not found: run `make deps` (Debian package systemd)")
    return found


def _request(sock: socket.socket, request: dict[str, object]) -> dict[str, object]:
    sock.sendall(json.dumps(request).encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the answer to {request}"
        reply += chunk
    answer: dict[str, object] = json.loads(reply)
    return answer


def _command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths are limited to 107 bytes."""
    path = Path("/tmp") / f"rlsa-{uuid.uuid4().hex[:12]}"
    path.mkdir(mode=0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """An abstract-namespace datagram socket standing in for systemd's notify socket."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"ratelimitd-test-{uuid.uuid4().hex}"
    server.bind(b"\0" + name.encode())
    server.settimeout(20)
    yield "@" + name, server
    server.close()


def _wait_for_line(stream: object, needle: str) -> list[str]:
    """Read `stream` line by line until one contains `needle`; return what was read."""
    assert hasattr(stream, "readline")
    seen: list[str] = []
    while True:
        line = stream.readline()
        if not line:
            raise AssertionError(f"{needle!r} never printed; got {seen}")
        seen.append(line)
        if needle in line:
            return seen


def _wait_for_ready(notify_server: socket.socket) -> list[str]:
    """The assignments of the first notification that carries READY=1."""
    while True:
        message = notify_server.recv(4096).decode().split("\n")
        if "READY=1" in message:
            return message


def test_first_connection_starts_the_daemon_and_is_served(
    short_dir: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    socket_path = short_dir / "ratelimitd.sock"
    notify_address, notify_server = notify_socket
    config = short_dir / "config.toml"
    config.write_text('[providers.example]\nrate = "5/second"\nburst = 5\n')
    activator = subprocess.Popen(
        [
            _activator(),
            "--listen",
            str(socket_path),
            "--fdname=ratelimitd.socket",
            # The activator passes on only the variables named here (and PATH).
            f"--setenv=NOTIFY_SOCKET={notify_address}",
            "--",
            RATELIMITD,
            "serve",
            "--no-http",
            "--config",
            str(config),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert activator.stderr is not None
        _wait_for_line(activator.stderr, f"Listening on {socket_path}")
        # Nothing started yet: the process is still the activator, waiting for a client.
        assert Path(_command_line(activator.pid)[0]).name == "systemd-socket-activate"
        assert socket_path.is_socket()

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(20)
            client.connect(str(socket_path))
            assert _request(client, {"op": "ping"}) == {"id": None, "ok": True}
            hello = _request(client, {"op": "hello", "id": 7})
            assert hello["server"] == "ratelimitd"
            assert hello["id"] == 7
            granted = _request(client, {"op": "acquire", "provider": "example", "timeout": 0})
            assert granted["ok"] is True, granted

        # The activator exec'd the daemon in place: same pid, now ratelimitd.
        command = _command_line(activator.pid)
        assert RATELIMITD in command, command
        assert "serve" in command, command
        assert f"STATUS=serving on {socket_path}" in _wait_for_ready(notify_server)

        # A second client reaches the same daemon.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(20)
            client.connect(str(socket_path))
            assert _request(client, {"op": "ping", "id": "again"}) == {"id": "again", "ok": True}

        activator.send_signal(signal.SIGTERM)
        assert activator.wait(timeout=20) == 0
        # The daemon did not create the socket, so it must not have removed it.
        assert socket_path.is_socket()
    finally:
        if activator.poll() is None:
            activator.kill()
            activator.wait(timeout=10)
        if activator.stderr is not None:
            activator.stderr.close()


def test_without_activation_the_daemon_binds_and_removes_its_own_socket(
    daemon_factory: DaemonFactory, short_dir: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    socket_path = short_dir / "own.sock"
    notify_address, notify_server = notify_socket
    daemon = daemon_factory(
        None, env={"NOTIFY_SOCKET": notify_address}, socket_path=socket_path, script=True, ready=False
    )
    _wait_for_ready(notify_server)
    with NdjsonClient.connect(socket_path, timeout=20) as client:
        assert client.ask({"op": "ping"}) == {"id": None, "ok": True}
    assert (socket_path.stat().st_mode & 0o777) == 0o660
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=20) == 0
    assert not socket_path.exists()
