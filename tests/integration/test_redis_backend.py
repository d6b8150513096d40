"""Many daemons, one limit: real daemons sharing buckets through a real redis-server.

Each test starts its own redis-server on a temporary Unix socket (or a 3-master Cluster on
loopback ports) and the daemons it needs, and stops them all. Windows are short (2-3 s) so
the whole file stays well under two minutes.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest
from daemons import DaemonLauncher, RunningDaemon
from redis_servers import RedisCluster, RedisServer
from support import NdjsonClient, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

RATE = 200.0
BURST = 20


def backend_config(url: str, host: str, *, extra: str = "", provider: str = "") -> str:
    return f"""
[backend]
kind = "redis"
url = "{url}"
host_id = "{host}"
key_prefix = "t:"
expected_hosts = 2
{extra}

[providers.api]
rate = "{RATE:g}/s"
burst = {BURST}
{provider}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


class Load:
    """Threads that keep asking one daemon for permits until stopped; grants counted."""

    def __init__(self, daemon: RunningDaemon, *, threads: int = 4, timeout: float = 1.0) -> None:
        self.daemon = daemon
        self.timeout = timeout
        self.granted = 0
        self.answers: list[dict[str, object]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with NdjsonClient.connect(self.daemon.socket_path, timeout=self.timeout + 5) as client:
            while not self._stop.is_set():
                answer = client.request("acquire", provider="api", timeout=self.timeout)
                with self._lock:
                    self.answers.append(answer)
                    if answer.get("ok") is True:
                        self.granted += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 6)


def granted(daemon: RunningDaemon) -> int:
    return int(daemon.bucket_status("api")["granted"])


def shared_limit(daemons: list[RunningDaemon], seconds: float = 3.0) -> tuple[float, float]:
    """Grants of all `daemons` together over `seconds` once the burst is spent, and the expectation."""
    loads = [Load(d) for d in daemons]
    try:
        time.sleep(0.5)  # the burst and the first leases are spent
        before = [granted(d) for d in daemons]
        start = time.monotonic()
        time.sleep(seconds)
        after = [granted(d) for d in daemons]
        elapsed = time.monotonic() - start
    finally:
        for load in loads:
            load.stop()
    total = sum(after) - sum(before)
    print('SHARED', total, RATE * elapsed, [a - b for a, b in zip(after, before)])
    return total, RATE * elapsed


@pytest.mark.parametrize("hosts", [2, 3])
def test_daemons_on_one_redis_share_one_limit(
    daemon_factory: DaemonLauncher, redis_server: RedisServer, hosts: int
) -> None:
    daemons = [daemon_factory(backend_config(redis_server.url, f"h{i}")) for i in range(hosts)]
    total, expected = shared_limit(daemons)
    assert abs(total - expected) <= 0.05 * expected, (total, expected)
    each = [granted(d) for d in daemons]
    assert all(n > 0 for n in each), each  # every host gets a part
    status = daemons[0].request("status")
    assert status["backend"]["up"] is True
    assert status["backend"]["kind"] == "redis"


def test_a_redis_cluster_shares_one_limit(daemon_factory: DaemonLauncher, tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path / "cluster")
    try:
        daemons = [
            daemon_factory(backend_config(cluster.url, f"h{i}", extra="cluster = true")) for i in range(2)
        ]
        total, expected = shared_limit(daemons)
        assert abs(total - expected) <= 0.05 * expected, (total, expected)
        assert daemons[1].request("status")["backend"]["up"] is True
        for daemon in daemons:
            daemon.stop()
    finally:
        cluster.stop()
