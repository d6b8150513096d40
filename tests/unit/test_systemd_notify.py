"""sd_notify and LISTEN_FDS against real sockets (no service manager, no mocks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from ratelimitd.ops.systemd import Notifier, listen_fds

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _receive(server: socket.socket) -> list[str]:
    """One datagram, split into its assignments."""
    data = server.recv(4096)
    return data.decode().split("\n")


@pytest.fixture
def path_server(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    server.bind(address)
    server.settimeout(5)
    yield address, server
    server.close()


@pytest.fixture
def abstract_server() -> Iterator[tuple[str, socket.socket]]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"ratelimitd-test-{uuid.uuid4().hex}"
    server.bind(b"\0" + name.encode())
    server.settimeout(5)
    yield "@" + name, server
    server.close()


@pytest.mark.parametrize("server_fixture", ["path_server", "abstract_server"])
def test_each_message_arrives_as_one_datagram(server_fixture: str, request: pytest.FixtureRequest) -> None:
    address, server = request.getfixturevalue(server_fixture)
    notifier = Notifier({"NOTIFY_SOCKET": address})
    try:
        assert notifier.enabled
        assert notifier.ready("serving /run/x.sock")
        assert _receive(server) == ["READY=1", "STATUS=serving /run/x.sock"]
        assert notifier.status("reloading config")
        assert _receive(server) == ["STATUS=reloading config"]
        assert notifier.watchdog()
        assert _receive(server) == ["WATCHDOG=1"]
        assert notifier.stopping()
        assert _receive(server) == ["STOPPING=1"]
    finally:
        notifier.close()


def test_reloading_carries_the_monotonic_clock(path_server: tuple[str, socket.socket]) -> None:
    address, server = path_server
    notifier = Notifier({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading("reloading")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.close()
    first, second, third = _receive(server)
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert third == "STATUS=reloading"


def test_status_text_cannot_inject_assignments(path_server: tuple[str, socket.socket]) -> None:
    address, server = path_server
    notifier = Notifier({"NOTIFY_SOCKET": address})
    notifier.status("line one\nREADY=1")
    notifier.close()
    assert _receive(server) == ["STATUS=line one READY=1"]


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.reloading()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize("address", ["relative/path", "@", "vsock:2:1234"])
def test_unusable_address_disables_without_raising(address: str) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert not notifier.enabled
    assert not notifier.ready()


def test_send_errors_are_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level("DEBUG", logger="ratelimitd.ops.systemd"):
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.stopping()
    notifier.close()
    levels = [record.levelname for record in caplog.records]
    assert levels == ["WARNING", "DEBUG", "DEBUG"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "3000000"}, 3.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "4242"}, 0.2),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", **environ}, pid=4242)
    assert notifier.watchdog_interval() == expected


def test_listen_fds_for_another_pid_takes_nothing_but_clears_the_variables() -> None:
    environ = {
        "LISTEN_FDS": "1",
        "LISTEN_PID": str(os.getpid() + 1),
        "LISTEN_FDNAMES": "x",
        "A": "b",
    }
    assert listen_fds(environ) == []
    assert environ == {"A": "b"}


def test_listen_fds_without_activation_is_empty() -> None:
    environ = {"PATH": "/bin"}
    assert listen_fds(environ, pid=os.getpid()) == []
    assert environ == {"PATH": "/bin"}


def test_malformed_listen_fds_names_the_variables() -> None:
    with pytest.raises(ValueError, match="LISTEN_FDS/LISTEN_PID: must be integers"):
        listen_fds({"LISTEN_FDS": "two", "LISTEN_PID": str(os.getpid())})


# The child puts the passed descriptors at 3 and 4, as systemd does, then takes them.
_CHILD = """
import json, os, socket, sys
from ratelimitd.ops.systemd import listen_fds_with_names
listener_fd, pair_fd = int(sys.argv[1]), int(sys.argv[2])
os.dup2(listener_fd, 3)
os.dup2(pair_fd, 4)
os.close(listener_fd)
os.close(pair_fd)
os.environ.update(
    LISTEN_FDS="2", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="ratelimitd.socket:extra"
)
taken = listen_fds_with_names(os.environ)
report = {
    "names": [name for name, _ in taken],
    "fds": [sock.fileno() for _, sock in taken],
    "families": [int(sock.family) for _, sock in taken],
    "types": [int(sock.type) for _, sock in taken],
    "listener_address": taken[0][1].getsockname(),
    "inheritable": [os.get_inheritable(sock.fileno()) for _, sock in taken],
    "environ_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}
taken[1][1].send(b"hello from fd 4")
connection, _ = taken[0][1].accept()
connection.sendall(b"accepted on fd 3")
connection.close()
print(json.dumps(report))
"""


def test_listen_fds_takes_real_descriptors_3_and_4(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = str(tmp_path / "activated.sock")
    listener.bind(address)
    listener.listen()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Connect before the child runs: the backlog holds it until the child accepts.
        client.connect(address)
        client.settimeout(10)
        ours.settimeout(10)
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(listener.fileno()), str(theirs.fileno())],
            pass_fds=(listener.fileno(), theirs.fileno()),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["names"] == ["ratelimitd.socket", "extra"]
        assert report["fds"] == [3, 4]
        assert report["families"] == [socket.AF_UNIX, socket.AF_UNIX]
        assert report["types"] == [socket.SOCK_STREAM, socket.SOCK_DGRAM]
        assert report["listener_address"] == address
        assert report["inheritable"] == [False, False]
        assert report["environ_left"] == []
        assert ours.recv(100) == b"hello from fd 4"
        assert client.recv(100) == b"accepted on fd 3"
    finally:
        for sock in (listener, ours, theirs, client):
            sock.close()


_CHILD_NOT_A_SOCKET = """
import os
from ratelimitd.ops.systemd import listen_fds
read_end, write_end = os.pipe()
os.dup2(read_end, 3)
try:
    listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())})
except ValueError as exc:
    print(exc)
"""


def test_a_passed_descriptor_that_is_not_a_socket_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD_NOT_A_SOCKET],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "LISTEN_FDS: descriptor 3 (unknown) is not a socket"
