"""One user cannot take every connection, idle connections go, HTTP cannot starve the socket.

Against the real daemon: small limits in the config, real connections, the counters
read from its /metrics.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hostile import ThrowawayUser, public_dir, run_as, throwaway_user
from prometheus_client.parser import text_string_to_metric_families
from support import ConnectionClosed, NdjsonClient, wait_for

from ratelimitd.client import AsyncClient, Client
from ratelimitd.ops.logs import LINES_PER_WINDOW

if TYPE_CHECKING:
    from collections.abc import Iterator

    from daemons import DaemonFactory, RunningDaemon

_PING = """
import json, socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect(PATH)
sock.sendall(b'{"op":"ping"}\\n')
print(sock.makefile("rb").readline().decode())
"""


@pytest.fixture
def user() -> Iterator[ThrowawayUser]:
    with throwaway_user() as made:
        yield made


def sample(daemon: RunningDaemon, name: str, **labels: str) -> float:
    """One sample of the daemon's /metrics (0 when absent)."""
    url = f"http://127.0.0.1:{daemon.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def refused_at_once(path: Path) -> bool:
    """Connect and ping: True when the daemon closed the connection instead of answering."""
    try:
        with NdjsonClient.connect(path, timeout=5) as client:
            client.request("ping")
    except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
        return True
    return False


def test_one_user_cannot_take_every_connection(
    daemon_factory: DaemonFactory, short_dir: Path, user: ThrowawayUser
) -> None:
    config = '[server]\nsocket_mode = "0666"\nmax_connections_per_uid = 4\n'
    daemon = daemon_factory(config, socket_path=public_dir(short_dir) / "r.sock", http=True)
    held = [daemon.client() for _ in range(4)]
    for client in held:
        assert client.request("ping")["ok"] is True
    assert refused_at_once(daemon.socket_path)  # a fifth from the same user (root)
    # Another user still gets in.
    answer = run_as(user, _PING.replace("PATH", repr(str(daemon.socket_path))))
    assert answer["ok"] is True, answer
    labels = {"listener": "socket", "reason": "max_connections_per_uid"}
    assert sample(daemon, "ratelimitd_connections_refused_total", **labels) == 1
    daemon.wait_for_log("refusing a connection from uid 0")
    # A flood of refusals: every one counted, a few logged (then one line with a count).
    for _ in range(LINES_PER_WINDOW + 10):
        assert refused_at_once(daemon.socket_path)
    assert sample(daemon, "ratelimitd_connections_refused_total", **labels) == LINES_PER_WINDOW + 11
    assert daemon.log().count("refusing a connection from uid 0") == LINES_PER_WINDOW
    held.pop().close()
    wait_for(lambda: not refused_at_once(daemon.socket_path), what="a slot freed by a closed connection")


def test_idle_connections_are_closed_but_not_while_waiting(daemon_factory: DaemonFactory) -> None:
    config = '[server]\nidle_timeout = 0.4\n[providers.slow]\nrate = "1/2s"\nburst = 1\n'
    daemon = daemon_factory(config, http=True)
    idle = daemon.client()
    assert idle.request("ping")["ok"] is True
    waiting = daemon.client(timeout=15)
    assert waiting.request("acquire", provider="slow")["ok"] is True
    # The next permit comes ~2 s later, several idle timeouts: the waiting connection stays.
    granted = waiting.request("acquire", provider="slow", timeout=10, read_timeout=15)
    assert granted["ok"] is True, granted
    idle.expect_closed(timeout=10)
    assert sample(daemon, "ratelimitd_connections_closed_idle_total") >= 1


def test_clients_reconnect_after_an_idle_close(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("[server]\nidle_timeout = 0.3\n", http=True)
    with Client(daemon.socket_path) as client:
        assert client.ping() >= 0
        wait_for(lambda: sample(daemon, "ratelimitd_connections_closed_idle_total") >= 1, timeout=10)
        assert client.acquire("p").provider == "p"
        assert client.connections_made == 2

    async def run_async() -> int:
        async with AsyncClient(daemon.socket_path) as client:
            await client.ping()
            before = sample(daemon, "ratelimitd_connections_closed_idle_total")
            # Blocking the loop: it has not seen the close when the next call goes out.
            wait_for(lambda: sample(daemon, "ratelimitd_connections_closed_idle_total") > before, timeout=10)
            permit = await client.acquire("p")
            # The same for a report sent without waiting for its answer.
            before = sample(daemon, "ratelimitd_connections_closed_idle_total")
            wait_for(lambda: sample(daemon, "ratelimitd_connections_closed_idle_total") > before, timeout=10)
            await client.report_soon(permit, 200)
            reports = (await client.status("p"))["p"]["buckets"]["default"]["reports"]
            assert reports["2xx"] == 1, reports
            return client.connections_made

    assert asyncio.run(run_async()) == 3


def test_http_connections_are_capped_and_time_out(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("[http]\nmax_connections = 3\nidle_timeout = 0.5\n", http=True)
    silent = [socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as extra:
            assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        assert daemon.request("ping")["ok"] is True  # the socket is unaffected
        for conn in silent:  # sent nothing: closed after idle_timeout
            assert conn.recv(4096) == b""
    finally:
        for conn in silent:
            conn.close()
    assert sample(daemon, "ratelimitd_connections_refused_total", listener="http") == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/healthz", timeout=10) as response:
        assert response.status == 200
    daemon.wait_for_log("http: refusing a connection: max_connections (3) reached")


def test_the_open_file_limit_is_raised_to_the_hard_limit(daemon_factory: DaemonFactory) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the daemon
    try:
        daemon = daemon_factory()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = Path(f"/proc/{daemon.pid}/limits").read_text()
    (line,) = [row for row in limits.splitlines() if row.startswith("Max open files")]
    assert line.split()[3:5] == [str(hard), str(hard)], line
    assert f"open-file limit raised from 256 to {hard}" in daemon.log()


def test_http_refusal_does_not_break_scrapes_later(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("[http]\nmax_connections = 1\n", http=True)
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/healthz", timeout=10)
        assert refused.value.code == 503
        refused.value.close()

    def refusal_counted() -> bool:
        try:  # the held connection's slot frees once the daemon sees it closed
            return sample(daemon, "ratelimitd_connections_refused_total", listener="http") >= 1
        except urllib.error.HTTPError as exc:
            exc.close()
            return False

    wait_for(refusal_counted, timeout=10)
