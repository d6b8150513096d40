"""The sd_notify sequence of a real daemon, and what a SIGHUP reload keeps.

A bound datagram socket stands in for systemd: it is passed as NOTIFY_SOCKET with a
short WATCHDOG_USEC, and the test checks READY, the WATCHDOG pings, RELOADING then READY
on SIGHUP (good and bad config), STOPPING on SIGTERM, and exit code 0.
"""

from __future__ import annotations

import itertools
import queue
import signal
import socket
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from daemons import DaemonFactory
    from support import NdjsonClient

WATCHDOG_USEC = 200_000  # the daemon should ping about every 0.1 s
WAIT = 20.0  # generous bound for anything to happen; never reached when things work


@dataclass(frozen=True)
class Notification:
    received: float  # time.monotonic() on arrival
    assignments: tuple[str, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(assignment.partition("=")[0] for assignment in self.assignments)


class NotifyListener:
    """A thread that records every datagram sent to an abstract AF_UNIX socket."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"ratelimitd-test-{uuid.uuid4().hex}"
        self._socket.bind(b"\0" + name.encode())
        self._socket.settimeout(0.2)
        self.address = "@" + name
        self.received: list[Notification] = []  # everything, in arrival order
        self._queue: queue.Queue[Notification] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self._queue.put(Notification(time.monotonic(), tuple(data.decode().split("\n"))))

    def wait_for(self, predicate: Callable[[Notification], bool], what: str) -> Notification:
        """Record notifications until one satisfies `predicate`; fail after WAIT seconds."""
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            try:
                notification = self._queue.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                seen = [n.assignments for n in self.received]
                raise AssertionError(f"no {what} within {WAIT} s; received {seen}") from None
            self.received.append(notification)
            if predicate(notification):
                return notification

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._socket.close()


def _has(key: str) -> Callable[[Notification], bool]:
    return lambda notification: key in notification.keys


def _bucket(client: NdjsonClient, provider: str) -> dict[str, object]:
    answer = client.ask({"op": "status", "provider": provider})
    assert answer["ok"] is True, answer
    providers = answer["providers"]
    assert isinstance(providers, dict)
    bucket: dict[str, object] = providers[provider]["buckets"]["default"]
    return bucket


FIRST_CONFIG = """
[providers.slow]
rate = "1/minute"
burst = 1

[providers.learned]
rate = "10/second"
burst = 10
"""

SECOND_CONFIG = """
[providers.slow]
rate = "100/second"
burst = 1

[providers.learned]
rate = "10/second"
burst = 10

[providers.added]
rate = "5/second"
burst = 5
"""


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    notify = NotifyListener()
    yield notify
    notify.close()


def test_notify_sequence_across_reloads_and_stop(
    daemon_factory: DaemonFactory, listener: NotifyListener
) -> None:
    # The console script, as the systemd unit runs it; a clean environment plus systemd's variables.
    environ = {
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "RATELIMITD_FEATURE_LEARNING": "1",
    }
    daemon = daemon_factory(FIRST_CONFIG, env=environ, script=True, ready=False)
    socket_path = daemon.socket_path
    ready = listener.wait_for(_has("READY"), "READY=1")
    assert f"STATUS=serving on {socket_path}" in ready.assignments
    # READY=1 means served: a connection works at once, no retry needed.
    observer = daemon.client(timeout=WAIT)
    assert observer.ask({"op": "ping"}) == {"id": None, "ok": True}

    # Watchdog pings come from the event loop at about half of WATCHDOG_USEC.
    pings = [listener.wait_for(_has("WATCHDOG"), "WATCHDOG=1") for _ in range(6)]
    gaps = [b.received - a.received for a, b in itertools.pairwise(pings)]
    half_interval = WATCHDOG_USEC / 1_000_000 / 2
    assert 0.5 * half_interval <= statistics.median(gaps) <= 1.9 * half_interval, gaps

    # Learned state: a 429 report counts in the streak.
    assert observer.ask({"op": "acquire", "provider": "learned", "timeout": 0})["ok"] is True
    report = observer.ask({"op": "report", "provider": "learned", "status": 429})
    assert report["streak"] == 1, report
    learned_before = _bucket(observer, "learned")

    # A waiting acquire: "slow" allows one call a minute and the first is taken. The
    # timeout is longer than that minute, else the daemon fails the acquire at once.
    waiter = daemon.client(timeout=WAIT)
    assert waiter.ask({"op": "acquire", "provider": "slow", "timeout": 0})["ok"] is True
    waiter.send({"op": "acquire", "provider": "slow", "timeout": 3600, "id": "waiting"})
    deadline = time.monotonic() + WAIT
    while _bucket(observer, "slow")["waiters"] != 1:  # in flight on another connection
        assert time.monotonic() < deadline, "the acquire never started waiting"

    # Reload with a faster "slow" and a new provider: RELOADING=1 ... READY=1.
    daemon.write_config(SECOND_CONFIG)
    daemon.send_signal(signal.SIGHUP)
    reloading = listener.wait_for(_has("RELOADING"), "RELOADING=1")
    assert "MONOTONIC_USEC" in reloading.keys
    listener.wait_for(_has("READY"), "READY=1 after the reload")
    granted = waiter.read_response()  # the kept waiter is granted under the new rate
    assert granted["id"] == "waiting"
    assert granted["ok"] is True, granted
    assert _bucket(observer, "slow")["limits"]["requests"]["baseline"] == 100.0  # type: ignore[index]
    assert observer.ask({"op": "acquire", "provider": "added", "timeout": 0})["ok"] is True
    learned_after = _bucket(observer, "learned")
    for kept in ("streak", "reports", "history"):
        assert learned_after[kept] == learned_before[kept], kept
    assert learned_after["limits"] == learned_before["limits"]

    # A config that does not load: logged, the running one stays, READY=1 again.
    daemon.write_config("[providers.slow\nrate = nonsense\n")
    daemon.send_signal(signal.SIGHUP)
    listener.wait_for(_has("RELOADING"), "RELOADING=1 for the bad config")
    failed = listener.wait_for(_has("READY"), "READY=1 after the failed reload")
    status_line = next(a for a in failed.assignments if a.startswith("STATUS="))
    assert "fail" in status_line, failed.assignments
    assert _bucket(observer, "slow")["limits"]["requests"]["baseline"] == 100.0  # type: ignore[index]
    assert observer.ask({"op": "acquire", "provider": "added", "timeout": 0})["ok"] is True

    daemon.send_signal(signal.SIGTERM)
    listener.wait_for(_has("STOPPING"), "STOPPING=1")
    assert daemon.wait_exit(timeout=WAIT) == 0

    lifecycle = [
        key
        for notification in listener.received
        for key in notification.keys
        if key in ("READY", "RELOADING", "STOPPING")
    ]
    assert lifecycle == ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"]
    first_ready = next(i for i, n in enumerate(listener.received) if "READY" in n.keys)
    assert any("STATUS" in n.keys for n in listener.received[:first_ready])
    # The failed reload was logged with its error, naming the file.
    logged = daemon.log()
    assert any("ERROR" in line and str(daemon.config_path) in line for line in logged.splitlines()), logged
    assert "not valid TOML" in logged, logged
