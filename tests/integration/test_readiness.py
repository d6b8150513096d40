"""Readiness that means something: /readyz and ratelimitd_ready go false when clients would fail.

Real daemons over HTTP: the socket path removed or taken by another daemon, a state file that
cannot be written, a stop (seen by a scraper before the socket closes), and a failed reload
(reported by metric, status and log, without making the daemon unready).
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from support import assert_refuses_writes, make_readonly_dir, wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from daemons import DaemonFactory, RunningDaemon

CONFIG = """
[providers.api]
rate = "10/second"
burst = 10
"""


def readyz(daemon: RunningDaemon) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{daemon.http_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metric(daemon: RunningDaemon, line_start: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_removed_socket_path_makes_the_daemon_unready(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG, http=True)
    assert readyz(daemon) == (200, {"ready": True})
    with daemon.client() as client:
        daemon.socket_path.unlink()
        wait_for(lambda: readyz(daemon)[0] == 503, timeout=5, what="/readyz 503")
        reasons = readyz(daemon)[1]["reasons"]
        assert "no longer leads to this daemon" in reasons["socket"]
        assert metric(daemon, "ratelimitd_ready") == 0
        # Connected clients are still served; only new ones cannot find it.
        assert client.request("acquire", provider="api")["ok"] is True
        assert client.request("status")["daemon"]["not_ready"] == reasons


def test_a_socket_path_taken_by_another_daemon(daemon_factory: DaemonFactory) -> None:
    first = daemon_factory(CONFIG, http=True)
    first.socket_path.unlink()
    second = daemon_factory(CONFIG, http=True, socket_path=first.socket_path)
    wait_for(lambda: readyz(first)[0] == 503, timeout=5, what="the first daemon unready")
    assert readyz(second) == (200, {"ready": True})


def test_a_state_file_that_cannot_be_written(daemon_factory: DaemonFactory, tmp_path: Path) -> None:
    with contextlib.ExitStack() as cleanup:
        readonly = tmp_path / "ro"
        make_readonly_dir(readonly, {}, cleanup)
        assert_refuses_writes(readonly)
        config = CONFIG + f'\n[persist]\npath = "{readonly / "state.json"}"\nsave_interval = 0.2\n'
        daemon = daemon_factory(
            config, http=True, env={"RATELIMITD_FEATURE_PERSIST": "1", "RATELIMITD_FEATURE_LEARNING": "1"}
        )
        assert readyz(daemon)[0] == 200
        daemon.request("report", provider="api", status=429, retry_after=1)  # something to save
        wait_for(lambda: readyz(daemon)[0] == 503, timeout=5, what="/readyz 503")
        assert "the state file cannot be written" in readyz(daemon)[1]["reasons"]["state"]
        daemon.stop()


def test_a_failed_reload_is_reported_and_the_daemon_stays_ready(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG, http=True)
    started = metric(daemon, "ratelimitd_config_last_reload_success_timestamp_seconds")
    assert started is not None
    assert started > 0
    daemon.reload(CONFIG.replace("burst = 10", "burts = 10"), outcome="reload failed")
    wait_for(
        lambda: metric(daemon, 'ratelimitd_config_reloads_total{result="failure"}') == 1,
        timeout=5,
        what="the failure counted",
    )
    assert metric(daemon, "ratelimitd_config_last_reload_successful") == 0
    assert readyz(daemon) == (200, {"ready": True})
    reload = daemon.request("status")["daemon"]["reload"]
    assert reload["ok"] is False
    assert "burts" in reload["error"]
    daemon.reload(CONFIG.replace("10/second", "20/second"))
    assert metric(daemon, "ratelimitd_config_last_reload_successful") == 1
    assert metric(daemon, 'ratelimitd_config_reloads_total{result="success"}') == 1
    assert daemon.request("status")["daemon"]["reload"]["ok"] is True


def test_a_scraper_sees_the_daemon_unready_before_it_stops(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG, http=True)
    for _ in range(2):  # something scrapes this daemon every half second
        assert metric(daemon, "ratelimitd_ready") == 1
        time.sleep(0.5)
    daemon.send_signal(signal.SIGTERM)
    seen = []
    with contextlib.suppress(OSError):  # until the daemon is gone
        while daemon.proc.poll() is None:
            seen.append(metric(daemon, "ratelimitd_ready"))
            time.sleep(0.02)
    assert daemon.wait_exit(timeout=10) == 0
    assert 0 in seen  # the scrape after the stop began saw it unready, before the socket closed
