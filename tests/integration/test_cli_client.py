"""`ratelimitd status | acquire | report | reset` as processes against a real daemon."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from support import run_cli

from ratelimitd.cli.commands import EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE, format_status, parse_cost

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


def test_status_table(daemon: RunningDaemon) -> None:
    assert ratelimitd("acquire", "cli-table", socket=daemon.socket_path).code == 0
    run = ratelimitd("status", socket=daemon.socket_path)
    assert run.code == 0, run.err
    header, *rows = run.out.splitlines()
    assert header.split() == [
        "PROVIDER",
        "BUCKET",
        "UNIT",
        "RATE/BASELINE",
        "STATE",
        "STREAK",
        "GRANTED",
        "TIMEOUTS",
        "WAITERS",
    ]
    by_key = {tuple(row.split()[:3]): row.split() for row in rows}
    assert by_key[("fast", "default", "requests")][3] == "1,000,000/s"
    assert by_key[("multi", "default", "tokens")][3] == "1000/min"
    assert by_key[("cli-table", "default", "requests")][3:] == ["1/min", "ok", "0", "1", "0", "0"]
    one = ratelimitd("status", "fast", socket=daemon.socket_path)
    assert [line.split()[0] for line in one.out.splitlines()] == ["PROVIDER", "fast"]


def test_status_of_an_unknown_provider_exits_1(daemon: RunningDaemon) -> None:
    run = ratelimitd("status", "never-used", socket=daemon.socket_path)
    assert run.code == 1
    assert "unknown_provider" in run.err


def test_format_status_shows_a_reduced_rate_beside_its_baseline() -> None:
    table = format_status(
        {
            "p": {
                "buckets": {
                    "k1": {
                        "limits": {"requests": {"rate": 0.5, "baseline": 1.0, "period": 60.0}},
                        "state": "cooling_down",
                        "streak": 3,
                        "granted": 10,
                        "timeouts": 2,
                        "waiters": 4,
                    }
                }
            }
        }
    )
    assert table.splitlines()[1].split() == [
        "p",
        "k1",
        "requests",
        "30/min",
        "/",
        "60/min",
        "cooling_down",
        "3",
        "10",
        "2",
        "4",
    ]
    assert format_status({}) == "no providers yet\n"


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
