"""Bad saved state never stops the daemon, and never gives a bucket what it could not have earned.

Each case writes a state file (or something else) where the daemon keeps its state, starts a
real `ratelimitd serve` with the PERSIST and LEARNING gates, and checks that it starts, serves
and saves, that a bad bucket is dropped with a log line and a metric and the file kept aside,
and that every restored value is within what the live learner could reach.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from support import NdjsonClient

if TYPE_CHECKING:
    from pathlib import Path

    from daemons import DaemonFactory, RunningDaemon

GATES = {"RATELIMITD_FEATURE_PERSIST": "1", "RATELIMITD_FEATURE_LEARNING": "1"}
RATE = 100.0
MAX_PAUSE = 300.0


def config_text(state: Path) -> str:
    return f"""
[persist]
path = "{state}"
save_interval = 60

[learning]
max_pause = {MAX_PAUSE:g}

[providers.api]
rate = "{RATE:g}/second"
burst = {RATE:g}

[providers.other]
rate = "{RATE:g}/second"
burst = {RATE:g}
"""


def learner(**changes: Any) -> dict[str, Any]:
    """A well-formed saved learner (what a running daemon writes), with `changes`."""
    snapshot: dict[str, Any] = {
        "version": 1,
        "policy": "adaptive",
        "factor": 1.0,
        "top": 1.0,
        "streak_points": 0,
        "streak": 0,
        "next_permit": 1,
        "paused_until": None,
        "exhausted_until": None,
        "disabled_until": None,
        "rules": {"ceiling": None, "noise_share": None},
        "history": [],
    }
    snapshot.update(changes)
    return snapshot


def write_state(path: Path, api: dict[str, Any] | str, other: dict[str, Any] | None = None) -> None:
    now = time.time()
    buckets: dict[str, Any] = {"api": {"default": {"last_seen": now, "learner": api}}}
    if other is not None:
        buckets["other"] = {"default": {"last_seen": now, "learner": other}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"version": 1, "saved_at": now, "buckets": buckets}))


def start(daemon_factory: DaemonFactory, state: Path, *, http: bool = False) -> RunningDaemon:
    return daemon_factory(config_text(state), env=GATES, http=http)


def rate_of(daemon: RunningDaemon, provider: str = "api") -> float:
    rate: float = daemon.bucket_status(provider)["limits"]["requests"]["rate"]
    return rate


def test_top_zero_starts_clamped(tmp_path: Path, daemon_factory: DaemonFactory) -> None:
    state = tmp_path / "state.json"
    write_state(state, learner(top=0, streak=2))
    daemon = start(daemon_factory, state)
    assert daemon.request("acquire", provider="api")["ok"] is True
    assert daemon.bucket_status("api")["streak"] == 2  # restored, not dropped
    assert rate_of(daemon) > 0
    assert "was out of range and was clamped: top: 0.0 -> 0.2" in daemon.log()  # the floor


def test_a_factor_above_the_allowed_ceiling_is_clamped(tmp_path: Path, daemon_factory: DaemonFactory) -> None:
    state = tmp_path / "state.json"
    write_state(state, learner(factor=5.0, top=5.0))
    daemon = start(daemon_factory, state)
    assert rate_of(daemon) == RATE  # allow_above_configured is off: never above the configured rate
    assert "factor: 5.0 -> 1.0" in daemon.log()


def test_a_pause_is_never_longer_than_max_pause(tmp_path: Path, daemon_factory: DaemonFactory) -> None:
    state = tmp_path / "state.json"
    ten_days = time.time() + 10 * 86400
    write_state(state, learner(paused_until=ten_days))
    daemon = start(daemon_factory, state)
    paused_until = daemon.bucket_status("api")["paused_until"]
    assert paused_until is not None
    assert paused_until <= time.time() + MAX_PAUSE + 1.0


def test_a_huge_permit_counter_neither_breaks_acquires_nor_saves(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    state = tmp_path / "state.json"
    write_state(state, learner(next_permit=1e20, streak=1e30))
    daemon = start(daemon_factory, state)
    with NdjsonClient.connect(daemon.socket_path) as client:
        answers = [client.request("acquire", provider="api") for _ in range(3)]
    assert all(answer["ok"] for answer in answers), answers
    assert answers[0]["permit"] == 2**53
    assert daemon.stop() == 0
    saved = json.loads(state.read_text())["buckets"]["api"]["default"]["learner"]
    assert saved["next_permit"] == 2**53 + 3
    assert saved["streak"] == 2**53


def test_a_malformed_bucket_is_dropped_logged_counted_and_kept(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    state = tmp_path / "state.json"
    write_state(state, learner(factor="fast"), other=learner(streak=4))
    daemon = start(daemon_factory, state, http=True)
    assert daemon.bucket_status("other")["streak"] == 4  # the good bucket is restored
    assert daemon.bucket_status("api")["streak"] == 0
    assert rate_of(daemon) == RATE
    assert "dropped a malformed bucket: buckets.api.default.learner: factor: must be a finite number" in (
        daemon.log()
    )
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("state.json.rejected-")]
    assert len(kept) == 1
    assert json.loads(kept[0].read_text())["buckets"]["api"]["default"]["learner"]["factor"] == "fast"
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "ratelimitd_state_buckets_dropped_total 1.0" in text


def test_a_fifo_at_the_state_path_does_not_block_start(tmp_path: Path, daemon_factory: DaemonFactory) -> None:
    state = tmp_path / "state.json"
    os.mkfifo(state)
    daemon = start(daemon_factory, state)
    assert daemon.request("ping")["ok"] is True
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("state.json.corrupt-")]
    assert len(moved) == 1
    assert "not a regular file" in daemon.log()
    assert daemon.stop() == 0
    assert json.loads(state.read_text())["version"] == 1  # a regular file saved in its place


@pytest.mark.parametrize("which", ["state.json", "state.json.lock"])
def test_a_symlink_at_the_state_or_lock_path_is_not_followed(
    tmp_path: Path, daemon_factory: DaemonFactory, which: str
) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("do not touch\n")
    state = tmp_path / "state.json"
    (tmp_path / which).symlink_to(victim)
    daemon = start(daemon_factory, state)
    assert daemon.request("acquire", provider="api")["ok"] is True
    assert daemon.stop() == 0
    assert victim.read_text() == "do not touch\n"
    assert not (tmp_path / which).is_symlink()
    assert "a symbolic link (not followed)" in daemon.log()


def test_a_second_sigterm_during_the_drain_still_saves_and_removes_the_socket(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    state = tmp_path / "state.json"
    daemon = start(daemon_factory, state)
    reporter = daemon.client()
    assert reporter.request("report", provider="api", status=429)["streak"] == 1
    # A client that never reads its answers keeps the drain waiting.
    stuck = daemon.client()
    stuck.send_raw(b'{"op":"status"}\n' * 2000)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait_for_log("stopping: answered")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=10) == 0
    assert "second stop signal" in daemon.log()
    assert not daemon.socket_path.exists()
    saved = json.loads(state.read_text())["buckets"]["api"]["default"]["learner"]
    assert saved["streak"] == 1
