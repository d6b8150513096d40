"""What one host learns, every host follows: a spent quota, a disabled key, and one recovery
for the fleet. Real daemons on a real redis-server (temporary Unix socket)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from redis_servers import RedisServer
from support import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from daemons import DaemonLauncher, RunningDaemon

REDIS = """
[backend]
kind = "redis"
url = "{url}"
host_id = "{host}"
key_prefix = "t:"
expected_hosts = 2
"""
PROVIDER = """
[providers.api]
rate = "200/s"
burst = 20
"""
LEARNING = {"RATELIMITD_FEATURE_LEARNING": "1"}
RECOVERY = {"RATELIMITD_FEATURE_LEARNING": "1", "RATELIMITD_FEATURE_RECOVERY": "1"}
SPENT = {"x-ratelimit-limit-requests": "200", "x-ratelimit-remaining-requests": "0"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def pair(launch: DaemonLauncher, server: RedisServer, env: dict[str, str]) -> list[RunningDaemon]:
    return [launch(REDIS.format(url=server.url, host=host) + PROVIDER, env=env) for host in ("a", "b")]


def state(daemon: RunningDaemon) -> str:
    return str(daemon.bucket_status("api")["state"])


def refused(daemon: RunningDaemon) -> dict[str, Any]:
    answer: dict[str, Any] = daemon.request("acquire", provider="api", timeout=0.2)
    assert answer["ok"] is False, answer
    return answer


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ({"status": 429, "reason": "insufficient_quota"}, "exhausted"),
        ({"status": 401}, "disabled"),
    ],
    ids=["spent_quota", "disabled_key"],
)
def test_a_spent_quota_or_a_disabled_key_on_one_host_holds_every_host(
    daemon_factory: DaemonLauncher, redis_server: RedisServer, report: dict[str, Any], expected: str
) -> None:
    a, b = pair(daemon_factory, redis_server, LEARNING)
    assert b.request("acquire", provider="api")["ok"] is True
    reply = a.request("report", provider="api", bucket="default", **report)
    assert reply["ok"] is True, reply
    assert state(a) == expected
    wait_for(lambda: state(b) == expected, timeout=5.0, what=f"b {expected} too")
    refused(b)
    # A daemon started later (a new host) learns it from Redis at its first use.
    c = daemon_factory(REDIS.format(url=redis_server.url, host="c") + PROVIDER, env=LEARNING)
    refused(c)
    assert state(c) == expected
    assert b.request("reset", provider="api")["ok"] is True  # a reset on one host clears all
    for daemon in (a, c):
        wait_for(lambda d=daemon: state(d) == "ok", timeout=5.0, what="reset everywhere")  # type: ignore[misc]
        assert daemon.request("acquire", provider="api", timeout=5.0)["ok"] is True


def climbs(daemon: RunningDaemon) -> list[float]:
    """The factors after each recovery step the bucket's history holds, oldest first."""
    history = daemon.bucket_status("api").get("history") or []
    return [float(event["factor_after"]) for event in history if event.get("kind") == "recovered"]


def test_recovery_climbs_once_for_the_fleet_not_once_per_host(
    daemon_factory: DaemonLauncher, redis_server: RedisServer
) -> None:
    """Two hosts after one cut climb as one host does (the lone memory daemon beside them,
    cut the same way at the same moment): not twice as fast."""
    fleet = pair(daemon_factory, redis_server, RECOVERY)
    lone = daemon_factory(PROVIDER, env=RECOVERY)
    for daemon in (fleet[0], lone):
        permit = daemon.request("acquire", provider="api")["permit"]
        reply = daemon.request(
            "report", provider="api", bucket="default", status=429, permit=permit, headers=SPENT
        )
        assert reply["action"] == "reduced", reply
    cut = float(lone.bucket_status("api")["factor"])
    wait_for(lambda: float(fleet[1].bucket_status("api")["factor"]) == cut, timeout=5.0, what="b follows")
    # Quiet for the recovery wait, then a few steps at one per interval.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and len(climbs(lone)) < 3:
        time.sleep(0.1)
    alone = climbs(lone)
    assert len(alone) >= 3, alone
    shared = sorted(set(climbs(fleet[0]) + climbs(fleet[1])))
    # Each host's history holds its own steps and the ones it followed; the fleet took as
    # many distinct steps as the lone host (one more at most: the two windows are not aligned).
    assert len(alone) - 1 <= len(shared) <= len(alone) + 1, (shared, alone)
    wait_for(lambda: len({float(d.bucket_status("api")["factor"]) for d in fleet}) == 1, timeout=5.0)
