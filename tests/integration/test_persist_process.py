"""Persistence with real `ratelimitd serve` processes (issue 6, gate RATELIMITD_FEATURE_PERSIST).

kill -9 during heavy 429 reporting loses at most one save interval; a graceful stop
saves; a second daemon on the same state file refuses to start (exit code 3); a
corrupt state file is moved aside and the daemon starts at the configured rates.
The 429 streak is the yardstick: every 429 report raises it by one and the report's
answer says its value, so "what had been learned by time t" is known exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

STARTUP_BOUND = 20.0  # seconds; never reached when things work
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


class Daemon:
    """One `ratelimitd serve` with the LEARNING and PERSIST gates on, in the environment."""

    def __init__(self, directory: Path, config: str, name: str = "daemon") -> None:
        self.socket_dir = Path(tempfile.mkdtemp(prefix="rl-persist-"))  # AF_UNIX path limit
        self.socket_path = self.socket_dir / "ratelimitd.sock"
        self.config_path = directory / f"{name}.toml"
        self.config_path.write_text(config, "utf-8")
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RATELIMITD_")}
        env |= {"RATELIMITD_FEATURE_PERSIST": "1", "RATELIMITD_FEATURE_LEARNING": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ratelimitd",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--socket",
                    str(self.socket_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        return self.process

    def start(self) -> Daemon:
        process = self.spawn()
        deadline = time.monotonic() + STARTUP_BOUND
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"daemon exited with {process.returncode}:\n{self.log()}")
            try:
                if self.call({"op": "ping"})["ok"]:
                    return self
            except OSError:
                pass
            time.sleep(0.02)  # polling for start-up, not waiting for a rate
        raise AssertionError(f"daemon not ready after {STARTUP_BOUND} s:\n{self.log()}")

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10.0)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        return sock

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.connect() as sock, sock.makefile("rwb") as stream:
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            answer: dict[str, Any] = json.loads(stream.readline())
            return answer

    def bucket_status(self) -> dict[str, Any]:
        answer = self.call({"op": "status", "provider": "api"})
        assert answer["ok"], answer
        bucket: dict[str, Any] = answer["providers"]["api"]["buckets"]["default"]
        return bucket

    def signal(self, sig: signal.Signals) -> int:
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

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """Every Daemon the test appends is killed and cleaned up afterwards."""
    made: list[Daemon] = []
    yield made
    for daemon in made:
        daemon.cleanup()


def report_429s(daemon: Daemon, duration: float) -> list[tuple[float, int]]:
    """Pipelined 429 reports for `duration` s; (monotonic time answered, streak) per batch."""
    line = json.dumps({"op": "report", "provider": "api", "status": 429}).encode() + b"\n"
    batch = 100
    observed: list[tuple[float, int]] = []
    with daemon.connect() as sock, sock.makefile("rwb") as stream:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            stream.write(line * batch)
            stream.flush()
            streak = 0
            for _ in range(batch):
                answer = json.loads(stream.readline())
                assert answer["ok"], answer
                streak = max(streak, answer["streak"])
            observed.append((time.monotonic(), streak))
    return observed


def test_kill_9_during_heavy_reporting_loses_at_most_one_save_interval(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    state = tmp_path / "state" / "state.json"
    first = Daemon(tmp_path, config_text(state), "first")
    daemons.append(first)
    first.start()
    observed = report_429s(first, REPORT_FOR)
    killed_at = time.monotonic()
    killed_wall = time.time()
    assert first.signal(signal.SIGKILL) == -signal.SIGKILL

    final_streak = observed[-1][1]
    # Everything learned up to one save interval (plus slack) before the kill must survive.
    bound = killed_at - SAVE_INTERVAL - SAVE_SLACK
    must_keep = max(streak for answered, streak in observed if answered <= bound)
    assert must_keep > 1000, "too little reporting before the bound for the test to mean much"
    saved = orjson.loads(state.read_bytes())
    assert saved["saved_at"] >= killed_wall - SAVE_INTERVAL - SAVE_SLACK

    second = Daemon(tmp_path, config_text(state), "second")
    daemons.append(second)
    second.start()
    restored = second.bucket_status()
    assert must_keep <= restored["streak"] <= final_streak, (must_keep, final_streak)
    # The learned cut came back too (decayed by about a second of a 900 s half-life).
    rate = restored["limits"]["requests"]["rate"]
    assert rate < 0.9 * CONFIGURED_RATE, restored
    saved_factor = saved["buckets"]["api"]["default"]["learner"]["factor"]
    assert rate == pytest.approx(saved_factor * CONFIGURED_RATE, rel=0.01)
    assert any(entry["kind"] == "restored" for entry in restored["history"])
    assert second.signal(signal.SIGTERM) == 0


def test_graceful_stop_saves_even_with_a_long_interval(tmp_path: Path, daemons: list[Daemon]) -> None:
    state = tmp_path / "state.json"
    daemon = Daemon(tmp_path, config_text(state, save_interval=3600.0))
    daemons.append(daemon)
    daemon.start()
    observed = report_429s(daemon, 0.2)
    assert not state.exists()  # no periodic save yet
    assert daemon.signal(signal.SIGTERM) == 0
    learner = orjson.loads(state.read_bytes())["buckets"]["api"]["default"]["learner"]
    assert learner["streak"] == observed[-1][1]


def test_second_daemon_on_the_same_state_file_refuses_to_start(tmp_path: Path, daemons: list[Daemon]) -> None:
    state = tmp_path / "state.json"
    first = Daemon(tmp_path, config_text(state), "first")
    second = Daemon(tmp_path, config_text(state), "second")
    daemons += [first, second]
    holder = first.start().process
    assert holder is not None
    refused = second.spawn()
    assert refused.wait(timeout=STARTUP_BOUND) == 3, second.log()
    message = f"state file {state} is locked by another ratelimitd (pid {holder.pid})"
    assert message in second.log()
    assert not second.socket_path.exists()
    assert first.call({"op": "ping"})["ok"]  # the first one is unaffected
    assert first.signal(signal.SIGTERM) == 0
    # With the first gone (its lock released by the kernel), the second starts.
    second.start()
    assert second.signal(signal.SIGTERM) == 0


@pytest.mark.parametrize(
    "content",
    [b'{"version": 1, "saved_at": 17', b'{"version": 99, "saved_at": 1, "buckets": {}}'],
    ids=["truncated", "future-version"],
)
def test_bad_state_file_is_moved_aside_and_the_daemon_starts_at_baseline(
    tmp_path: Path, daemons: list[Daemon], content: bytes
) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    state = directory / "state.json"
    state.write_bytes(content)
    daemon = Daemon(tmp_path, config_text(state))
    daemons.append(daemon)
    daemon.start()
    bucket = daemon.bucket_status()
    assert bucket["limits"]["requests"]["rate"] == CONFIGURED_RATE
    assert bucket["streak"] == 0
    evidence = [p for p in directory.iterdir() if p.name.startswith("state.json.corrupt-")]
    assert len(evidence) == 1
    assert evidence[0].read_bytes() == content
    assert "moved to" in daemon.log()
    report_429s(daemon, 0.05)
    assert daemon.signal(signal.SIGTERM) == 0
    assert evidence[0].read_bytes() == content  # the new save did not touch the evidence
    assert orjson.loads(state.read_bytes())["version"] == 1


def _run(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def make_readonly_dir(directory: Path, files: Mapping[str, bytes], cleanup: ExitStack) -> str:
    """`directory` holding `files`, then really read-only (as in tests/unit/test_persist.py).

    Not root: chmod 0500. Root ignores modes: a tmpfs remounted read-only, else chattr +i.
    """
    directory.mkdir()
    if os.geteuid() != 0:
        for name, data in files.items():
            (directory / name).write_bytes(data)
        directory.chmod(0o500)
        cleanup.callback(directory.chmod, 0o700)
        return "chmod 0500"
    if _run("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(directory)):
        cleanup.callback(_run, "umount", "-l", str(directory))
        for name, data in files.items():
            (directory / name).write_bytes(data)
        if _run("mount", "-o", "remount,ro", str(directory)):
            return "read-only tmpfs"
    for name, data in files.items():
        (directory / name).write_bytes(data)
    if _run("chattr", "+i", str(directory)):
        cleanup.callback(_run, "chattr", "-i", str(directory))
        return "chattr +i"
    pytest.skip("running as root without mount or chattr: cannot make a read-only directory")


def test_read_only_state_directory_is_a_warning_not_a_crash(tmp_path: Path, daemons: list[Daemon]) -> None:
    # A state file from an earlier run that learned a cut.
    writer = Daemon(tmp_path, config_text(tmp_path / "seed" / "state.json"), "seed")
    daemons.append(writer)
    writer.start()
    report_429s(writer, 0.1)
    assert writer.signal(signal.SIGTERM) == 0
    saved = orjson.loads((tmp_path / "seed" / "state.json").read_bytes())
    learned_rate = saved["buckets"]["api"]["default"]["learner"]["factor"] * CONFIGURED_RATE
    assert learned_rate < CONFIGURED_RATE

    with ExitStack() as cleanup:
        directory = tmp_path / "ro"
        how = make_readonly_dir(directory, {"state.json": orjson.dumps(saved)}, cleanup)
        with pytest.raises(OSError):  # noqa: PT011 - EROFS, EACCES or EPERM by mechanism
            (directory / "probe").write_bytes(b"x")
        daemon = Daemon(tmp_path, config_text(directory / "state.json"))
        daemons.append(daemon)
        daemon.start()  # no crash: the state is loaded, saving is what fails
        assert daemon.bucket_status()["limits"]["requests"]["rate"] == pytest.approx(
            learned_rate, rel=0.01
        ), how
        report_429s(daemon, 3 * SAVE_INTERVAL)  # several periodic saves fail
        assert daemon.signal(signal.SIGTERM) == 0, daemon.log()
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
    tmp_path: Path, daemons: list[Daemon], stale_for: float, expected_share_of_cut: float
) -> None:
    # A real run learns a cut; its file is then aged as if written `stale_for` s ago.
    seed_state = tmp_path / "seed" / "state.json"
    writer = Daemon(tmp_path, config_text(seed_state), "seed")
    daemons.append(writer)
    writer.start()
    report_429s(writer, 0.1)
    assert writer.signal(signal.SIGTERM) == 0
    document = orjson.loads(seed_state.read_bytes())
    factor = document["buckets"]["api"]["default"]["learner"]["factor"]
    assert factor < 1.0
    shift = time.time() - document["saved_at"] + stale_for
    document["saved_at"] -= shift
    document["buckets"]["api"]["default"]["last_seen"] -= shift
    state = tmp_path / "aged" / "state.json"
    state.parent.mkdir()
    state.write_bytes(orjson.dumps(document))

    daemon = Daemon(tmp_path, config_text(state, max_age=4000.0), "aged")
    daemons.append(daemon)
    daemon.start()
    rate = daemon.bucket_status()["limits"]["requests"]["rate"]
    expected = CONFIGURED_RATE * (1.0 - (1.0 - factor) * expected_share_of_cut)
    # A few seconds pass between aging the file and the daemon reading it: 0.5 % slack.
    assert rate == pytest.approx(expected, rel=0.005), (factor, daemon.log())
    if stale_for > 4000.0:
        assert "dropped" in daemon.log()
    assert daemon.signal(signal.SIGTERM) == 0
