"""Persistence with real `ratelimitd serve` processes (gate RATELIMITD_FEATURE_PERSIST).

kill -9 during heavy 429 reporting loses at most one save interval; a graceful stop
saves; a second daemon on the same state file refuses to start (exit code 3); a
corrupt state file is moved aside and the daemon starts at the configured rates.
The 429 streak is the yardstick: every 429 report raises it by one and the report's
answer says its value, so "what had been learned by time t" is known exactly.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING

import orjson
import pytest
from support import NdjsonClient, assert_refuses_writes, make_readonly_dir

if TYPE_CHECKING:
    from pathlib import Path

    from daemons import DaemonFactory, RunningDaemon

STARTUP_BOUND = 20.0  # seconds; never reached when things work
GATES = {"RATELIMITD_FEATURE_PERSIST": "1", "RATELIMITD_FEATURE_LEARNING": "1"}
SAVE_INTERVAL = 0.5
# A save collects the learners' snapshots on the event loop and then writes on a thread;
# this bounds how late a periodic save may complete after its tick under heavy load.
SAVE_SLACK = 0.25
REPORT_FOR = 4 * SAVE_INTERVAL
CONFIGURED_RATE = 1000.0


def config_text(state_path: Path, save_interval: float = SAVE_INTERVAL, max_age: float = 604800.0) -> str:
    return f"""
[http]
enabled = false

[persist]
path = "{state_path}"
save_interval = {save_interval}
max_age = {max_age}

[providers.api]
rate = "{CONFIGURED_RATE:g}/second"
burst = {CONFIGURED_RATE:g}
"""


def report_429s(daemon: RunningDaemon, duration: float) -> list[tuple[float, int]]:
    """Pipelined 429 reports for `duration` s; (monotonic time answered, streak) per batch."""
    line = json.dumps({"op": "report", "provider": "api", "status": 429}).encode() + b"\n"
    batch = 100
    observed: list[tuple[float, int]] = []
    with NdjsonClient.connect(daemon.socket_path, timeout=10.0) as client:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            client.send_raw(line * batch)
            streak = 0
            for answer in client.read_responses(batch):
                assert answer["ok"], answer
                streak = max(streak, answer["streak"])
            observed.append((time.monotonic(), streak))
    return observed


def test_kill_9_during_heavy_reporting_loses_at_most_one_save_interval(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    state = tmp_path / "state" / "state.json"
    first = daemon_factory(config_text(state), env=GATES)
    observed = report_429s(first, REPORT_FOR)
    killed_at = time.monotonic()
    killed_wall = time.time()
    assert first.kill() == -signal.SIGKILL

    final_streak = observed[-1][1]
    # Everything learned up to one save interval (plus slack) before the kill must survive.
    bound = killed_at - SAVE_INTERVAL - SAVE_SLACK
    must_keep = max(streak for answered, streak in observed if answered <= bound)
    assert must_keep > 1000, "too little reporting before the bound for the test to mean much"
    saved = orjson.loads(state.read_bytes())
    assert saved["saved_at"] >= killed_wall - SAVE_INTERVAL - SAVE_SLACK

    second = daemon_factory(config_text(state), env=GATES)
    restored = second.bucket_status("api")
    assert must_keep <= restored["streak"] <= final_streak, (must_keep, final_streak)
    # The learned cut came back too (decayed by about a second of a 900 s half-life).
    rate = restored["limits"]["requests"]["rate"]
    assert rate < 0.9 * CONFIGURED_RATE, restored
    saved_factor = saved["buckets"]["api"]["default"]["learner"]["factor"]
    assert rate == pytest.approx(saved_factor * CONFIGURED_RATE, rel=0.01)
    assert any(entry["kind"] == "restored" for entry in restored["history"])
    assert second.stop(timeout=10) == 0


def test_graceful_stop_saves_even_with_a_long_interval(tmp_path: Path, daemon_factory: DaemonFactory) -> None:
    state = tmp_path / "state.json"
    daemon = daemon_factory(config_text(state, save_interval=3600.0), env=GATES)
    observed = report_429s(daemon, 0.2)
    assert not state.exists()  # no periodic save yet
    assert daemon.stop(timeout=10) == 0
    learner = orjson.loads(state.read_bytes())["buckets"]["api"]["default"]["learner"]
    assert learner["streak"] == observed[-1][1]


def test_second_daemon_on_the_same_state_file_refuses_to_start(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    state = tmp_path / "state.json"
    first = daemon_factory(config_text(state), env=GATES)
    second = daemon_factory(config_text(state), env=GATES, ready=False)
    assert second.wait_exit(timeout=STARTUP_BOUND) == 3, second.log()
    message = f"state file {state} is locked by another ratelimitd (pid {first.pid})"
    assert message in second.log()
    assert not second.socket_path.exists()
    assert first.request("ping")["ok"]  # the first one is unaffected
    assert first.stop(timeout=10) == 0
    # With the first gone (its lock released by the kernel), the second starts.
    second.restart()
    assert second.stop(timeout=10) == 0


@pytest.mark.parametrize(
    "content",
    [b'{"version": 1, "saved_at": 17', b'{"version": 99, "saved_at": 1, "buckets": {}}'],
    ids=["truncated", "future-version"],
)
def test_bad_state_file_is_moved_aside_and_the_daemon_starts_at_baseline(
    tmp_path: Path, daemon_factory: DaemonFactory, content: bytes
) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    state = directory / "state.json"
    state.write_bytes(content)
    daemon = daemon_factory(config_text(state), env=GATES)
    bucket = daemon.bucket_status("api")
    assert bucket["limits"]["requests"]["rate"] == CONFIGURED_RATE
    assert bucket["streak"] == 0
    evidence = [p for p in directory.iterdir() if p.name.startswith("state.json.corrupt-")]
    assert len(evidence) == 1
    assert evidence[0].read_bytes() == content
    assert "moved to" in daemon.log()
    report_429s(daemon, 0.05)
    assert daemon.stop(timeout=10) == 0
    assert evidence[0].read_bytes() == content  # the new save did not touch the evidence
    assert orjson.loads(state.read_bytes())["version"] == 1


def test_read_only_state_directory_is_a_warning_not_a_crash(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    # A state file from an earlier run that learned a cut.
    writer = daemon_factory(config_text(tmp_path / "seed" / "state.json"), env=GATES)
    report_429s(writer, 0.1)
    assert writer.stop(timeout=10) == 0
    saved = orjson.loads((tmp_path / "seed" / "state.json").read_bytes())
    learned_rate = saved["buckets"]["api"]["default"]["learner"]["factor"] * CONFIGURED_RATE
    assert learned_rate < CONFIGURED_RATE

    with ExitStack() as cleanup:
        directory = tmp_path / "ro"
        how = make_readonly_dir(directory, {"state.json": orjson.dumps(saved)}, cleanup)
        assert_refuses_writes(directory)
        # No crash: the state is loaded, saving is what fails.
        daemon = daemon_factory(config_text(directory / "state.json"), env=GATES)
        assert daemon.bucket_status("api")["limits"]["requests"]["rate"] == pytest.approx(
            learned_rate, rel=0.01
        ), how
        report_429s(daemon, 3 * SAVE_INTERVAL)  # several periodic saves fail
        assert daemon.stop(timeout=10) == 0, daemon.log()
        log = daemon.log()
        assert log.count("cannot save state") == 1, (how, log)  # once, not every interval
        assert "running without a lock" in log
        assert (directory / "state.json").read_bytes() == orjson.dumps(saved)


DECAY_HALF_LIFE = 900.0  # LearningSettings.decay_half_life


@pytest.mark.parametrize(
    ("stale_for", "expected_share_of_cut"),
    [(0.0, 1.0), (DECAY_HALF_LIFE, 0.5), (2 * DECAY_HALF_LIFE, 0.25), (5000.0, 0.0)],
    ids=["fresh", "one-half-life", "two-half-lives", "older-than-max-age"],
)
def test_restored_cut_decays_by_the_time_it_was_stale(
    tmp_path: Path, daemon_factory: DaemonFactory, stale_for: float, expected_share_of_cut: float
) -> None:
    # A real run learns a cut; its file is then aged as if written `stale_for` s ago.
    seed_state = tmp_path / "seed" / "state.json"
    writer = daemon_factory(config_text(seed_state), env=GATES)
    report_429s(writer, 0.1)
    assert writer.stop(timeout=10) == 0
    document = orjson.loads(seed_state.read_bytes())
    factor = document["buckets"]["api"]["default"]["learner"]["factor"]
    assert factor < 1.0
    shift = time.time() - document["saved_at"] + stale_for
    document["saved_at"] -= shift
    document["buckets"]["api"]["default"]["last_seen"] -= shift
    state = tmp_path / "aged" / "state.json"
    state.parent.mkdir()
    state.write_bytes(orjson.dumps(document))

    daemon = daemon_factory(config_text(state, max_age=4000.0), env=GATES)
    rate = daemon.bucket_status("api")["limits"]["requests"]["rate"]
    expected = CONFIGURED_RATE * (1.0 - (1.0 - factor) * expected_share_of_cut)
    # A few seconds pass between aging the file and the daemon reading it: 0.5 % slack.
    assert rate == pytest.approx(expected, rel=0.005), (factor, daemon.log())
    if stale_for > 4000.0:
        assert "dropped" in daemon.log()
    assert daemon.stop(timeout=10) == 0
