"""Every op of protocol v1 end to end against a real daemon process.

Order and counters are asserted, not durations: a waiting acquire uses a small real
rate (20/s, one permit every 50 ms) and its response is awaited with a bounded timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ratelimitd import __version__

if TYPE_CHECKING:
    from daemons import DaemonFactory

CONFIG = """
[server]
default_timeout = 10.0

[providers.fast]
rate = "20/second"
burst = 1

[providers.slow]
rate = "1/hour"
burst = 1

[providers.multi]
limits = [
  { unit = "requests", rate = "100/second", burst = 10 },
  { unit = "tokens", rate = "1000/second", burst = 1000 },
]

[providers.keys]
rate = "1/hour"
burst = 1
buckets = ["a", "b"]
"""


def test_hello_names_server_version_protocol_and_features(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    hello = daemon.request("hello")
    assert hello["ok"] is True
    assert hello["server"] == "ratelimitd"
    assert hello["version"] == __version__
    assert hello["protocol"] == 1
    features = hello["features"]
    assert {"learning", "persist"} <= set(features)
    assert all(isinstance(value, bool) for value in features.values())


def test_hello_reports_feature_gates_from_the_environment(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG, env={"RATELIMITD_FEATURE_LEARNING": "yes"})
    assert daemon.request("hello")["features"]["learning"] is True
    assert daemon.request("hello")["features"]["persist"] is False


def test_ping_echoes_string_and_integer_ids_and_works_without_id(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    client.send({"op": "ping", "id": "abc"}, {"op": "ping", "id": 7}, {"op": "ping"})
    first, second, third = client.read_responses(3)
    assert first == {"id": "abc", "ok": True}
    assert second == {"id": 7, "ok": True}
    assert third["ok"] is True
    assert third.get("id") is None


def test_acquire_grants_with_bucket_rate_waited_and_increasing_permits(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    first = client.request("acquire", provider="multi")
    second = client.request("acquire", provider="multi", cost=2)
    assert first["ok"] is True, first
    assert first["provider"] == "multi"
    assert first["bucket"] == "default"
    assert first["rate"] == pytest.approx(100.0)
    assert first["waited"] == 0
    assert second["ok"] is True
    assert second["permit"] > first["permit"]
    assert daemon.bucket_status("multi")["granted"] == 2


def test_multi_unit_cost_is_granted_only_when_every_unit_allows(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    assert client.request("acquire", provider="multi", cost={"requests": 1, "tokens": 900})["ok"] is True
    # 100 tokens left: requests would allow, tokens do not, so nothing is taken at all.
    refused = client.request("acquire", provider="multi", cost={"requests": 5, "tokens": 900}, timeout=0)
    assert refused["error"] == "timeout"
    assert refused["retry_after"] > 0
    # The 5 requests were not consumed: 9 requests remain for a tokens-free cost.
    assert client.request("acquire", provider="multi", cost={"requests": 9}, timeout=0)["ok"] is True
    # A unit the provider does not limit is ignored (and said so); no request is left, so none is taken.
    free = client.request("acquire", provider="multi", cost={"requests": 0, "other": 1e9}, timeout=0)
    assert (free["ok"], free["ignored_units"]) == (True, ["other"])
    assert daemon.bucket_status("multi")["granted"] == 3


def test_a_waiting_acquire_is_granted_when_the_rate_allows(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    assert client.request("acquire", provider="fast")["ok"] is True
    waited = client.request("acquire", provider="fast", timeout=5)
    assert waited["ok"] is True, waited
    assert waited["waited"] > 0
    assert daemon.bucket_status("fast")["granted"] == 2


def test_pipelined_ping_is_not_held_back_by_a_waiting_acquire(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    assert client.request("acquire", provider="fast")["ok"] is True
    client.send(
        {"op": "acquire", "provider": "fast", "timeout": 5, "id": "slow-one"},
        {"op": "ping", "id": "quick"},
        {"op": "status", "provider": "fast", "id": "look"},
    )
    order = [r["id"] for r in client.read_responses(3)]
    assert order.index("quick") < order.index("slow-one")
    assert order.index("look") < order.index("slow-one")


def test_responses_to_pipelined_acquires_are_matched_by_id(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    assert client.request("acquire", provider="fast")["ok"] is True
    ids = [client.submit("acquire", provider="fast", timeout=5) for _ in range(3)]
    pong = client.request("ping")
    assert pong["ok"] is True
    grants = [client.response(rid) for rid in reversed(ids)]
    assert all(g["ok"] for g in grants)
    permits = [g["permit"] for g in reversed(grants)]
    assert permits == sorted(permits)  # FIFO: granted in the order asked


def test_fifo_a_large_cost_is_not_starved_by_small_ones(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(
        """
        [providers.fifo]
        rate = "20/second"
        burst = 5
        """
    )
    client = daemon.client()
    assert client.request("acquire", provider="fifo", cost=5)["ok"] is True  # empty now
    client.send({"op": "acquire", "provider": "fifo", "cost": 5, "timeout": 10, "id": "large"})
    client.send(*({"op": "acquire", "provider": "fifo", "cost": 1, "timeout": 10, "id": i} for i in range(5)))
    order = [r["id"] for r in client.read_responses(6, timeout=10)]
    # Each small cost could have fitted long before the large one: FIFO serves the large one first.
    assert order == ["large", 0, 1, 2, 3, 4]


def test_acquire_picks_a_bucket_and_exclude_moves_to_the_next(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    first = client.request("acquire", provider="keys")
    assert first["bucket"] == "a"
    second = client.request("acquire", provider="keys", exclude=["a"])
    assert second["ok"] is True
    assert second["bucket"] == "b"


def test_report_counts_by_status_class_and_streak(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    granted = client.request("acquire", provider="keys")
    bucket = granted["bucket"]
    reports = [
        client.request("report", provider="keys", bucket=bucket, status=status, permit=granted["permit"])
        for status in (200, 429, 429, 500, "network_error")
    ]
    assert all(r["ok"] for r in reports), reports
    assert reports[0]["streak"] == 0
    assert reports[2]["streak"] == 2
    assert all(r["provider"] == "keys" and r["bucket"] == bucket for r in reports)
    assert all(r["action"] in {"none", "reduced", "paused", "recovered", "disabled"} for r in reports)
    status = daemon.bucket_status("keys", bucket)
    assert status["reports"]["2xx"] == 1
    assert status["reports"]["429"] == 2
    assert status["reports"]["5xx"] == 1
    assert status["reports"]["network_error"] == 1
    assert isinstance(status["history"], list)


def test_report_on_the_default_bucket_with_headers_reason_and_retry_after(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(CONFIG)
    reply = daemon.request(
        "report",
        provider="fast",
        status=429,
        reason="rate_limit_exceeded",
        retry_after=1.5,
        headers={"Retry-After": "2", "x-ratelimit-remaining-requests": "0"},
    )
    assert reply["ok"] is True, reply
    assert reply["bucket"] == "default"
    assert reply["streak"] == 1
    assert daemon.bucket_status("fast")["reports"]["429"] == 1


def test_status_lists_every_provider_with_limits_and_counters(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    everything = daemon.request("status")
    assert everything["ok"] is True
    assert set(everything["providers"]) == {"fast", "slow", "multi", "keys"}
    assert set(everything["providers"]["keys"]["buckets"]) == {"a", "b"}
    multi = daemon.bucket_status("multi")
    assert multi["limits"]["requests"]["rate"] == pytest.approx(100.0)
    assert multi["limits"]["requests"]["baseline"] == pytest.approx(100.0)
    assert multi["limits"]["requests"]["burst"] == 10
    assert multi["limits"]["tokens"]["rate"] == pytest.approx(1000.0)
    assert multi["limits"]["tokens"]["period"] == 1.0
    assert multi["state"] == "ok"
    assert multi["paused_until"] is None
    assert multi["streak"] == 0
    assert multi["granted"] == 0
    assert multi["timeouts"] == 0
    assert isinstance(multi["history"], list)
    slow = daemon.bucket_status("slow")
    assert slow["limits"]["requests"]["period"] == 3600.0


def test_providers_are_created_on_first_use_at_the_default_rate(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory('[defaults]\nrate = "7/second"\nburst = 3\n')
    assert "newcomer" not in daemon.request("status")["providers"]
    granted = daemon.request("acquire", provider="newcomer")
    assert granted["ok"] is True
    assert granted["rate"] == pytest.approx(7.0)
    status = daemon.request("status", provider="newcomer")["providers"]["newcomer"]
    assert status["configured"] is False
    assert status["buckets"]["default"]["limits"]["requests"]["burst"] == 3


def test_reset_forgets_streak_and_history(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    for _ in range(3):
        assert client.request("report", provider="keys", bucket="b", status=429)["ok"] is True
    assert daemon.bucket_status("keys", "b")["streak"] == 3
    reply = client.request("reset", provider="keys", bucket="b")
    assert reply == {"id": reply["id"], "ok": True, "provider": "keys", "buckets": ["b"]}
    after = daemon.bucket_status("keys", "b")
    assert after["streak"] == 0
    assert after["state"] == "ok"
    assert after["limits"]["requests"]["rate"] == after["limits"]["requests"]["baseline"]
    whole = client.request("reset", provider="keys")
    assert whole["buckets"] == ["a", "b"]


def test_timeout_zero_fails_now_with_retry_after(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    assert client.request("acquire", provider="slow")["ok"] is True
    refused = client.request("acquire", provider="slow", timeout=0)
    assert refused["ok"] is False
    assert refused["error"] == "timeout"
    assert "timeout" in refused["message"]
    # One permit per hour was just used: the next one is about an hour away.
    assert 3000 < refused["retry_after"] <= 3600
    assert daemon.bucket_status("slow")["timeouts"] == 1


def test_timeout_that_cannot_be_met_is_answered_at_once(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    assert client.request("acquire", provider="slow")["ok"] is True
    refused = client.request("acquire", provider="slow", timeout=5)
    assert refused["error"] == "timeout"
    assert refused["retry_after"] > 5
    assert daemon.bucket_status("slow")["granted"] == 1


def test_the_default_timeout_applies_when_none_is_given(daemon_factory: DaemonFactory) -> None:
    # RATELIMITD_DEFAULT_TIMEOUT overrides the file's server.default_timeout (10 s).
    daemon = daemon_factory(CONFIG, env={"RATELIMITD_DEFAULT_TIMEOUT": "0"})
    client = daemon.client()
    assert client.request("acquire", provider="slow")["ok"] is True
    refused = client.request("acquire", provider="slow")
    assert refused["error"] == "timeout"
    assert refused["retry_after"] > 0
