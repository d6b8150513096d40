"""`ratelimitd status | acquire | report | reset` as processes against a real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from support import clean_env, run_cli

from ratelimitd.cli.commands import EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE, format_status, parse_cost
from ratelimitd.cli.status_view import COLUMNS, format_age

if TYPE_CHECKING:
    from pathlib import Path

    from daemons import DaemonFactory, RunningDaemon

CONFIG = """
[http]
enabled = false

[defaults]
rate = "1/minute"
burst = 1

[providers.fast]
rate = "1000000/second"
burst = 1000000

[providers.multi]
limits = [
  { unit = "requests", rate = "100/second", burst = 100 },
  { unit = "tokens", rate = "1000/minute", burst = 1000 },
]
"""


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: DaemonFactory) -> RunningDaemon:
    return module_daemon_factory(CONFIG)


def ratelimitd(*args: str, socket: Path | str) -> Run:
    done = run_cli([*args, "--socket", str(socket)], timeout=30)
    return Run(done.returncode, done.stdout, done.stderr)


def status_json(daemon: RunningDaemon, provider: str) -> dict[str, object]:
    run = ratelimitd("status", provider, "--json", socket=daemon.socket_path)
    assert run.code == 0, run.err
    bucket: dict[str, object] = json.loads(run.out)["providers"][provider]["buckets"]["default"]
    return bucket


def test_acquire_grants_silently_then_times_out_with_75(daemon: RunningDaemon) -> None:
    granted = ratelimitd("acquire", "cli-acq", socket=daemon.socket_path)
    assert (granted.code, granted.out, granted.err) == (0, "", "")
    refused = ratelimitd("acquire", "cli-acq", "--timeout", "0", socket=daemon.socket_path)
    assert refused.code == EX_TEMPFAIL
    assert refused.out == ""
    assert "no permit within the timeout" in refused.err
    assert "retry in about" in refused.err
    bucket = status_json(daemon, "cli-acq")
    assert (bucket["granted"], bucket["timeouts"]) == (1, 1)


def test_acquire_json_and_multi_unit_cost(daemon: RunningDaemon) -> None:
    run = ratelimitd(
        "acquire",
        "multi",
        "--cost",
        "requests=1",
        "--cost",
        "tokens=600",
        "--json",
        socket=daemon.socket_path,
    )
    assert run.code == 0, run.err
    permit = json.loads(run.out)
    assert (permit["provider"], permit["bucket"]) == ("multi", "default")
    assert isinstance(permit["permit"], int)
    # 600 of the 1000-token burst are gone: another 600 cannot be granted now.
    again = ratelimitd(
        "acquire", "multi", "--cost", "tokens=600", "--timeout", "0", socket=daemon.socket_path
    )
    assert again.code == EX_TEMPFAIL


def test_acquire_bad_usage_exits_2(daemon: RunningDaemon) -> None:
    for args in (
        ("acquire", "fast", "--cost", "abc"),
        ("acquire", "fast", "--cost", "3", "--cost", "tokens=2"),
        ("acquire", "not a name"),
        ("acquire", "multi", "--cost", "tokens=5000"),  # larger than the burst: never
        ("acquire", "fast", "--timeout", "-1"),
    ):
        run = ratelimitd(*args, socket=daemon.socket_path)
        assert run.code == EX_USAGE, (args, run)
        assert run.err.strip(), args


def test_no_daemon_exits_69(tmp_path: Path) -> None:
    for args in (("acquire", "fast"), ("status",), ("report", "fast", "200"), ("reset", "fast")):
        run = ratelimitd(*args, socket=tmp_path / "none.sock")
        assert run.code == EX_UNAVAILABLE, (args, run)
        assert "not reachable" in run.err


def test_report_then_status_then_reset(daemon: RunningDaemon) -> None:
    assert ratelimitd("acquire", "cli-rep", socket=daemon.socket_path).code == 0
    run = ratelimitd(
        "report",
        "cli-rep",
        "429",
        "--permit",
        "1",
        "--reason",
        "rate_limit_exceeded",
        "--header",
        "Retry-After: 2",
        "--header",
        "x-ratelimit-remaining-requests: 0",
        socket=daemon.socket_path,
    )
    assert run.code == 0, run.err
    assert run.out.startswith("cli-rep/default: action=")
    assert "streak=1" in run.out
    assert run.out.rstrip().endswith("rate=1/min")  # 1/minute configured, printed as status prints it
    network = ratelimitd("report", "cli-rep", "network_error", socket=daemon.socket_path)
    assert network.code == 0, network.err
    bucket = status_json(daemon, "cli-rep")
    assert bucket["streak"] == 1
    reports = bucket["reports"]
    assert isinstance(reports, dict)
    assert {k: n for k, n in reports.items() if n} == {"429": 1, "network_error": 1}

    reset = ratelimitd("reset", "cli-rep", "--bucket", "default", socket=daemon.socket_path)
    assert (reset.code, reset.out) == (0, "cli-rep: reset default\n")
    assert status_json(daemon, "cli-rep")["streak"] == 0


def test_report_bad_status_and_unknown_bucket(daemon: RunningDaemon) -> None:
    assert ratelimitd("report", "fast", "teapot", socket=daemon.socket_path).code == EX_USAGE
    assert ratelimitd("report", "fast", "99", socket=daemon.socket_path).code == EX_USAGE
    run = ratelimitd("report", "fast", "200", "--bucket", "nope", socket=daemon.socket_path)
    assert run.code == EX_USAGE
    assert "bucket" in run.err


def cells(row: str) -> dict[str, str]:
    """A table row by column (cells are separated by at least two spaces)."""
    return dict(zip(COLUMNS, [c.strip() for c in row.split("  ") if c.strip()], strict=True))


def test_status_table(daemon: RunningDaemon) -> None:
    assert ratelimitd("acquire", "cli-table", socket=daemon.socket_path).code == 0
    run = ratelimitd("status", socket=daemon.socket_path)
    assert run.code == 0, run.err
    header, *rows = run.out.splitlines()
    assert [c.strip() for c in header.split("  ") if c.strip()] == list(COLUMNS)
    by_key = {(r["PROVIDER"], r["BUCKET"], r["UNIT"]): r for r in map(cells, rows)}
    assert by_key[("fast", "default", "requests")]["RATE/BASELINE"] == "1,000,000/s"
    assert by_key[("multi", "default", "tokens")]["RATE/BASELINE"] == "1000/min"
    table = by_key[("cli-table", "default", "requests")]
    assert table["AVAILABLE"].startswith("in ")  # burst 1 at 1/min: the next permit in about a minute
    assert table["WHY"] == "rate_limited"
    assert {k: table[k] for k in ("SHADOW", "STATE", "429s", "LAST 429", "GRANTED", "WAITERS")} == {
        "SHADOW": "1/min",
        "STATE": "ok",
        "429s": "0",
        "LAST 429": "-",
        "GRANTED": "1",
        "WAITERS": "0",
    }
    one = ratelimitd("status", "fast", socket=daemon.socket_path)
    assert [line.split()[0] for line in one.out.splitlines()] == ["PROVIDER", "fast"]


def test_status_shows_429s_why_and_ages(daemon_factory: DaemonFactory) -> None:
    """After 429s: their count, the age of the last one, the reason and the shadow rate."""
    path = daemon_factory(CONFIG).socket_path  # learning off: the shadow rate is what it would set
    for _ in range(3):
        assert ratelimitd("acquire", "fast", socket=path).code == 0
        assert ratelimitd("report", "fast", "429", socket=path).code == 0
    run = ratelimitd("status", "fast", socket=path)
    (row,) = run.out.splitlines()[1:]
    values = cells(row)
    assert values["429s"] == "3"
    assert values["LAST 429"].endswith("s ago")
    assert values["RATE/BASELINE"] == "1,000,000/s"
    assert values["STATE"] == "ok"
    assert values["STREAK"] == "3"
    assert "1970" not in run.out  # ages, never epoch times


def test_status_watch_redraws_in_place(daemon: RunningDaemon) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "ratelimitd", "status", "--watch", "0.2", "--socket", str(daemon.socket_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    try:
        assert watcher.stdout is not None
        seen = b""
        while seen.count(b"\x1b[H\x1b[2J") < 2:
            chunk = os.read(watcher.stdout.fileno(), 4096)
            assert chunk, watcher.stderr.read() if watcher.stderr else b""
            seen += chunk
    finally:
        watcher.send_signal(signal.SIGINT)
        _out, err = watcher.communicate(timeout=10)  # reads and closes both pipes
    assert watcher.returncode == 0, err
    frames = seen.split(b"\x1b[H\x1b[2J")[1:]
    assert all(b"PROVIDER" in frame and b"fast" in frame for frame in frames[:2])


def test_status_of_an_unknown_provider_exits_1(daemon: RunningDaemon) -> None:
    run = ratelimitd("status", "never-used", socket=daemon.socket_path)
    assert run.code == 1
    assert "unknown_provider" in run.err


def test_format_status_shows_a_reduced_rate_beside_its_baseline() -> None:
    now = 1_800_000_000.0
    table = format_status(
        {
            "p": {
                "buckets": {
                    "k1": {
                        "limits": {
                            "requests": {"rate": 0.5, "baseline": 1.0, "period": 60.0, "shadow_rate": 0.5}
                        },
                        "state": "cooling_down",
                        "streak": 3,
                        "granted": 10,
                        "timeouts": 2,
                        "waiters": 4,
                        "reports": {"429": 7},
                        "available_in": 125.0,
                        "why": "rate_limited",
                        "events": {"reason": "429s", "reason_since": now - 3725, "last_429": now - 4.25},
                    }
                }
            }
        },
        now=now,
        daemon={"ready": False, "not_ready": {"state": "disk full"}, "reload": {"ok": False, "error": "bad"}},
    )
    lines = table.splitlines()
    assert lines[0] == "daemon not ready: state: disk full"
    assert lines[1] == "daemon last reload failed, running the previous configuration: bad"
    cells = [c.strip() for c in lines[3].split("  ") if c.strip()]
    assert cells == [
        "p", "k1", "requests", "30/min / 60/min", "30/min", "cooling_down", "429s 1h02m ago",
        "in 2m05s", "7", "4.2s ago", "3", "10", "2", "4",
    ]  # fmt: skip
    assert format_status({}) == "no providers yet\n"


def test_format_status_says_whom_a_retry_after_holds_when_not_the_default() -> None:
    def bucket(scope: str, setting: str, why: str) -> dict[str, object]:
        return {
            "limits": {"requests": {"rate": 50.0, "baseline": 50.0, "period": 1.0}},
            "state": "ok",
            "retry_after_scope": {"scope": scope, "setting": setting, "why": why},
        }

    noisy = "auto: 429s came back at 12% right after pauses (11% overall): load-unrelated"
    table = format_status(
        {
            "flaky": {"buckets": {"k1": bucket("request", "auto", noisy)}},
            "plain": {"buckets": {"k1": bucket("bucket", "auto", "auto: no verdict yet")}},
            "pinned": {"buckets": {"k1": bucket("bucket", "bucket", "configured: bucket")}},
        }
    )
    assert table.splitlines()[-2:] == [
        f"flaky/k1: Retry-After holds the request; {noisy}",
        "pinned/k1: Retry-After holds the bucket; configured: bucket",
    ]


def test_format_age() -> None:
    assert [format_age(s) for s in (-1, 0.44, 9.96, 12, 65, 3725, 90061)] == [
        "0.0s", "0.4s", "10.0s", "12s", "1m05s", "1h02m", "1d01h",
    ]  # fmt: skip


def test_parse_cost() -> None:
    assert parse_cost(None) == 1
    assert parse_cost(["2.5"]) == 2.5
    assert parse_cost(["requests=1", "tokens=1200"]) == {"requests": 1.0, "tokens": 1200.0}


def test_all_buckets_exhausted_exits_75(daemon_factory: DaemonFactory) -> None:
    config = """
[http]
enabled = false

[features]
learning = true

[providers.keys]
rate = "10/second"
buckets = ["k1", "k2"]
"""
    path = daemon_factory(config).socket_path
    assert ratelimitd("acquire", "keys", socket=path).code == 0
    disabled = ratelimitd("report", "keys", "401", "--bucket", "k1", socket=path)
    assert "action=disabled" in disabled.out
    run = ratelimitd("acquire", "keys", "--exclude", "k2", "--timeout", "0", socket=path)
    assert run.code == EX_TEMPFAIL
    assert "all_buckets_exhausted" in run.err
    assert "auth_failed" in run.err


def test_report_used_settles_and_says_so(daemon: RunningDaemon) -> None:
    sock = daemon.socket_path
    # 300 tokens: with the 600 an earlier test took, still within the 1000-token burst, so
    # the grant never waits for a refill (which took longer than the client's timeout).
    acquired = ratelimitd("acquire", "multi", "--cost", "tokens=300", "--json", socket=sock)
    assert acquired.code == 0, acquired.err
    grant = json.loads(acquired.out)
    assert grant["ignored_units"] == []
    run = ratelimitd(
        "report",
        "multi",
        "200",
        "--permit",
        str(grant["permit"]),
        "--used",
        "tokens=100",
        socket=daemon.socket_path,
    )
    assert run.code == 0, run.err
    assert run.out.rstrip().endswith("settled=true")
    # Settled once: the same permit again changes nothing.
    again = ratelimitd(
        "report",
        "multi",
        "200",
        "--permit",
        str(grant["permit"]),
        "--used",
        "tokens=1",
        socket=daemon.socket_path,
    )
    assert again.out.rstrip().endswith("settled=false")
    typo = ratelimitd("report", "multi", "200", "--used", "tokns=1", socket=sock)
    assert typo.code == EX_USAGE
    assert "used.tokns" in typo.err
    assert (
        ratelimitd("report", "multi", "200", "--used", "tokens=-1", socket=daemon.socket_path).code
        == EX_USAGE
    )
