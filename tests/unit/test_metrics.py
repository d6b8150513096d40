"""Metrics: counters, histogram and scrape-time gauges, read back from a fresh registry."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ratelimitd.core.causes import EventStats
from ratelimitd.core.errors import ErrorCode
from ratelimitd.core.providers import STATUS_CLASSES, Bucket, BucketStats, LimitStats, ProviderStats
from ratelimitd.daemon.config import Config, Features
from ratelimitd.daemon.metrics_hooks import MetricsHooks, NoMetrics
from ratelimitd.ops.metrics import BUCKET_STATES, WAIT_BUCKETS, Metrics

WALL = 1_700_000_000.0


def bucket_stats(**overrides: object) -> BucketStats:
    values: dict[str, object] = {
        "limits": {
            "requests": LimitStats(rate=5.0, baseline=10.0, period=1.0, burst=10.0, shadow_rate=4.0),
            "tokens": LimitStats(rate=500.0, baseline=1000.0, period=60.0, burst=1000.0, shadow_rate=400.0),
        },
        "streak": 3,
        "state": "paused",
        "paused_until": WALL + 12.5,
        "granted": 42,
        "timeouts": 2,
        "reports": {**dict.fromkeys(STATUS_CLASSES, 0), "2xx": 30, "429": 7},
        "waiters": 4,
        "factor": 0.5,
        "shadow_factor": 0.4,
        "ceiling": None,
        "reductions": 2,
        "recoveries": 1,
        "pauses": 1,
        "malformed_headers": 5,
        "suspicious_headers": 3,
    }
    values.update(overrides)
    return BucketStats(**values)  # type: ignore[arg-type]


@dataclass
class StubService:
    """A ServiceView built from the real config and statistics dataclasses."""

    providers: dict[str, ProviderStats]
    config: Config = field(default_factory=lambda: Config(features=Features(learning=True, persist=True)))
    connected_clients: int = 3
    waiting_count: int = 4
    refused_connections: dict[tuple[str, str], int] = field(default_factory=dict)
    idle_closed: int = 0
    untrusted_reports: int = 0

    def statistics(self, *, history: bool = True) -> dict[str, ProviderStats]:
        return self.providers

    def waiting(self) -> int:
        return self.waiting_count


@dataclass
class StubSaves:
    saves_ok: int = 0
    saves_failed: int = 0
    last_success_wall: float | None = None
    buckets_dropped: int = 0


def bucket(provider: str, name: str = "default") -> Bucket:
    return Bucket(provider, name, Config().provider_for(provider), 0.0)


def make_service() -> StubService:
    return StubService(
        providers={
            "openai": ProviderStats(
                buckets={
                    "key1": bucket_stats(
                        events=EventStats(
                            changes={
                                ("down", "429s"): 2,
                                ("down", "announced_limit"): 1,
                                ("up", "recovery"): 1,
                            },
                            pauses={"overload": 1},
                            paused_seconds=1.5,
                            resets=1,
                            reason="429s",
                            reason_since=WALL - 30,
                            last_429=WALL - 31,
                        ),
                        fill=0.25,
                    ),
                    "key2": bucket_stats(state="ok", paused_until=None, streak=0),
                },
                configured=True,
                selection="failover",
            ),
            "idle": ProviderStats(
                buckets={"default": bucket_stats(granted=0, state="ok", paused_until=None)},
                configured=False,
                selection="failover",
            ),
        }
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_acquire_outcomes_and_wait_histogram(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, version="1.2.3", max_providers=10)
    key1, key2 = bucket("openai", "key1"), bucket("openai", "key2")
    metrics.on_granted(key1, 0.0)
    metrics.on_granted(key2, 0.003)  # in the 0.005 bucket
    metrics.on_granted(key1, 0.005)  # le is inclusive
    metrics.on_granted(key2, 120.0)  # only in +Inf
    metrics.on_timeout(key1)
    metrics.on_acquire_error("openai")
    assert key1.metrics is key2.metrics  # per-provider counters, resolved once per bucket

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"provider": "openai", **labels})

    assert sample("ratelimitd_acquires_total", outcome="granted") == 4
    assert sample("ratelimitd_acquires_total", outcome="timeout") == 1
    assert sample("ratelimitd_acquires_total", outcome="error") == 1
    assert sample("ratelimitd_acquire_wait_seconds_count") == 4
    assert sample("ratelimitd_acquire_wait_seconds_sum") == pytest.approx(120.008)
    assert sample("ratelimitd_acquire_wait_seconds_bucket", le="0.0001") == 1
    assert sample("ratelimitd_acquire_wait_seconds_bucket", le="0.0025") == 1
    assert sample("ratelimitd_acquire_wait_seconds_bucket", le="0.005") == 3
    assert sample("ratelimitd_acquire_wait_seconds_bucket", le="60.0") == 3
    assert sample("ratelimitd_acquire_wait_seconds_bucket", le="+Inf") == 4
    les = [
        s.labels["le"]
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        if family.name == "ratelimitd_acquire_wait_seconds"
        for s in family.samples
        if s.name.endswith("_bucket")
    ]
    assert [float(le) for le in les] == [*WAIT_BUCKETS, float("inf")]
    assert WAIT_BUCKETS[0] == 0.0001
    assert WAIT_BUCKETS[-1] == 60.0


def test_providers_beyond_the_cap_are_not_recorded(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, version="1", max_providers=2)
    for name in ("a", "b", "c", "d"):
        metrics.on_granted(bucket(name), 0.0)
        metrics.on_timeout(bucket(name))
        metrics.on_acquire_error(name)
    recorded = {
        s.labels["provider"]
        for family in registry.collect()
        if family.name == "ratelimitd_acquires"
        for s in family.samples
    }
    assert recorded == {"a", "b"}


def test_gauges_and_bucket_counters_from_statistics(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, version="1.2.3", max_providers=10)
    service = make_service()
    for _ in range(5):
        metrics.on_protocol_error(ErrorCode.BAD_REQUEST)
    ready = [False]
    metrics.attach(service, wall=lambda: WALL, ready=lambda: ready[0])

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    key1 = {"provider": "openai", "bucket": "key1"}
    key2 = {"provider": "openai", "bucket": "key2"}
    assert sample("ratelimitd_permits_granted_total", **key1) == 42
    assert sample("ratelimitd_reports_total", **key1, status_class="429") == 7
    assert sample("ratelimitd_reports_total", **key1, status_class="2xx") == 30
    assert sample("ratelimitd_reports_total", **key1, status_class="network_error") == 0
    assert sample("ratelimitd_rate_changes_total", **key1, direction="down", reason="429s") == 2
    assert sample("ratelimitd_rate_changes_total", **key1, direction="down", reason="announced_limit") == 1
    assert sample("ratelimitd_rate_changes_total", **key1, direction="up", reason="recovery") == 1
    # The series alerts read start at 0 on a bucket without events.
    assert sample("ratelimitd_rate_changes_total", **key2, direction="down", reason="429s") == 0
    assert sample("ratelimitd_rate_changes_total", **key2, direction="up", reason="recovery") is None
    assert sample("ratelimitd_pauses_total", **key1, reason="retry_after") == 0
    assert sample("ratelimitd_pauses_total", **key1, reason="overload") == 1
    assert sample("ratelimitd_paused_seconds_total", **key1) == 1.5
    assert sample("ratelimitd_resets_total", **key1) == 1
    assert sample("ratelimitd_bucket_last_change_timestamp_seconds", **key1, reason="429s") == WALL - 30
    assert sample("ratelimitd_bucket_last_change_timestamp_seconds", **key2, reason="429s") is None
    assert sample("ratelimitd_bucket_fill_ratio", **key1) == 0.25
    assert sample("ratelimitd_providers") == 2
    assert sample("ratelimitd_providers_max") == 1000
    assert sample("ratelimitd_malformed_headers_total", **key1) == 5
    assert sample("ratelimitd_suspicious_headers_total", **key1) == 3
    assert sample("ratelimitd_bucket_rate_per_second", **key1, unit="tokens") == 500.0
    assert sample("ratelimitd_bucket_baseline_per_second", **key1, unit="tokens") == 1000.0
    assert sample("ratelimitd_bucket_rate_ratio", **key1, unit="requests") == 0.5
    assert sample("ratelimitd_bucket_shadow_rate_per_second", **key1, unit="requests") == 4.0
    assert sample("ratelimitd_bucket_streak", **key1) == 3
    assert sample("ratelimitd_bucket_waiters", **key1) == 4
    assert sample("ratelimitd_bucket_pause_remaining_seconds", **key1) == 12.5
    assert sample("ratelimitd_bucket_pause_remaining_seconds", provider="openai", bucket="key2") == 0.0
    states = {s: sample("ratelimitd_bucket_state", **key1, state=s) for s in BUCKET_STATES}
    assert states == {"ok": 0, "paused": 1, "cooling_down": 0, "exhausted": 0, "disabled": 0}
    assert sample("ratelimitd_bucket_state", provider="openai", bucket="key2", state="ok") == 1

    # A provider known to the service has its acquire series at 0 before any event.
    assert sample("ratelimitd_acquires_total", provider="idle", outcome="granted") == 0
    assert sample("ratelimitd_acquire_wait_seconds_count", provider="idle") == 0

    assert sample("ratelimitd_protocol_errors_total", code="bad_request") == 5
    assert sample("ratelimitd_protocol_errors_total", code="line_too_long") == 0
    assert sample("ratelimitd_feature_enabled", feature="learning") == 1
    assert sample("ratelimitd_feature_enabled", feature="recovery") == 0
    assert sample("ratelimitd_feature_enabled", feature="persist") == 1
    assert sample("ratelimitd_connected_clients") == 3
    assert sample("ratelimitd_waiting_acquires") == 4
    assert (
        sample(
            "ratelimitd_build_info",
            version="1.2.3",
            python=platform.python_version(),
            policy="adaptive",
            features="learning,persist",
        )
        == 1
    )
    assert sample("ratelimitd_ready") == 0
    ready[0] = True
    service.connected_clients = 7
    assert sample("ratelimitd_ready") == 1
    assert sample("ratelimitd_connected_clients") == 7
    assert sample("process_resident_memory_bytes") is not None


def test_state_saves(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, version="1", max_providers=10)
    assert registry.get_sample_value("ratelimitd_state_last_save_timestamp_seconds") == 0
    saves = StubSaves()
    metrics.attach(make_service(), wall=lambda: WALL, ready=lambda: True, saves=saves)
    assert registry.get_sample_value("ratelimitd_state_saves_total", {"outcome": "failure"}) == 0
    assert registry.get_sample_value("ratelimitd_state_last_save_timestamp_seconds") == 0
    saves.saves_ok, saves.saves_failed, saves.last_success_wall = 1, 2, WALL
    assert registry.get_sample_value("ratelimitd_state_saves_total", {"outcome": "success"}) == 1
    assert registry.get_sample_value("ratelimitd_state_saves_total", {"outcome": "failure"}) == 2
    assert registry.get_sample_value("ratelimitd_state_last_save_timestamp_seconds") == WALL
    assert registry.get_sample_value("ratelimitd_state_buckets_dropped_total") == 0
    saves.buckets_dropped = 3
    assert registry.get_sample_value("ratelimitd_state_buckets_dropped_total") == 3


def test_unattached_metrics_still_expose_daemon_series(registry: CollectorRegistry) -> None:
    Metrics(registry, version="1", max_providers=10)
    assert registry.get_sample_value("ratelimitd_ready") == 0
    assert registry.get_sample_value("ratelimitd_connected_clients") == 0
    assert registry.get_sample_value("ratelimitd_feature_enabled", {"feature": "pacing"}) == 0


def test_exposition_follows_naming_rules(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, version="1", max_providers=10)
    metrics.attach(make_service(), wall=lambda: WALL, ready=lambda: True)
    metrics.on_granted(bucket("openai"), 0.2)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    ours = {name: f for name, f in families.items() if name.startswith("ratelimitd_")}
    for name, family in ours.items():
        if family.type == "counter":
            assert all(s.name == f"{name}_total" for s in family.samples), name
        if name.endswith("_seconds"):  # counters of seconds are `..._seconds_total`
            assert family.type in {"histogram", "gauge", "counter"}, name
    allowed = {
        "provider",
        "bucket",
        "unit",
        "outcome",
        "status_class",
        "code",
        "state",
        "feature",
        "version",
        "python",
        "policy",
        "features",
        "direction",
        "reason",
        "result",
        "op",
        "le",
        "listener",
    }
    assert {label for f in ours.values() for s in f.samples for label in s.labels} <= allowed
    assert set(ours) == {
        "ratelimitd_acquires",
        "ratelimitd_acquire_wait_seconds",
        "ratelimitd_permits_granted",
        "ratelimitd_reports",
        "ratelimitd_rate_changes",
        "ratelimitd_pauses",
        "ratelimitd_paused_seconds",
        "ratelimitd_resets",
        "ratelimitd_malformed_headers",
        "ratelimitd_suspicious_headers",
        "ratelimitd_request_duration_seconds",
        "ratelimitd_bucket_fill_ratio",
        "ratelimitd_bucket_last_change_timestamp_seconds",
        "ratelimitd_config_reloads",
        "ratelimitd_config_last_reload_successful",
        "ratelimitd_config_last_reload_success_timestamp_seconds",
        "ratelimitd_providers",
        "ratelimitd_providers_max",
        "ratelimitd_protocol_errors",
        "ratelimitd_state_saves",
        "ratelimitd_state_buckets_dropped",
        "ratelimitd_bucket_rate_per_second",
        "ratelimitd_bucket_baseline_per_second",
        "ratelimitd_bucket_rate_ratio",
        "ratelimitd_bucket_shadow_rate_per_second",
        "ratelimitd_bucket_streak",
        "ratelimitd_bucket_waiters",
        "ratelimitd_bucket_state",
        "ratelimitd_bucket_pause_remaining_seconds",
        "ratelimitd_feature_enabled",
        "ratelimitd_connected_clients",
        "ratelimitd_connections_refused",
        "ratelimitd_connections_closed_idle",
        "ratelimitd_reports_untrusted",
        "ratelimitd_waiting_acquires",
        "ratelimitd_state_last_save_timestamp_seconds",
        "ratelimitd_ready",
        "ratelimitd_build_info",
    }


def test_metrics_and_no_metrics_implement_the_hooks(registry: CollectorRegistry) -> None:
    hooks: list[MetricsHooks] = [Metrics(registry, version="1", max_providers=10), NoMetrics()]
    for recorder in hooks:
        b = bucket("openai")
        recorder.on_granted(b, 0.1)
        recorder.on_timeout(b)
        recorder.on_acquire_error("openai")
        recorder.on_protocol_error(ErrorCode.TIMEOUT)
    assert (
        registry.get_sample_value("ratelimitd_acquires_total", {"provider": "openai", "outcome": "granted"})
        == 1
    )
    assert registry.get_sample_value("ratelimitd_protocol_errors_total", {"code": "timeout"}) == 1
    assert (
        registry.get_sample_value("ratelimitd_acquires_total", {"provider": "openai", "outcome": "error"})
        == 1
    )


@dataclass
class StubDaemon:
    reloads: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    last_reload_success_wall: float | None = None
    last_reload_failed: bool = False


def test_reloads_ops_and_dropped_providers(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, version="1", max_providers=10)
    daemon = StubDaemon()
    metrics.attach(make_service(), wall=lambda: WALL, ready=lambda: True, daemon=daemon)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("ratelimitd_config_reloads_total", result="failure") == 0
    assert sample("ratelimitd_config_last_reload_successful") == 1
    assert sample("ratelimitd_config_last_reload_success_timestamp_seconds") == WALL  # loaded at start
    daemon.reloads["failure"] = 1
    daemon.last_reload_failed = True
    assert sample("ratelimitd_config_reloads_total", result="failure") == 1
    assert sample("ratelimitd_config_last_reload_successful") == 0
    daemon.reloads["success"], daemon.last_reload_failed, daemon.last_reload_success_wall = 1, False, WALL + 9
    assert sample("ratelimitd_config_last_reload_success_timestamp_seconds") == WALL + 9

    assert sample("ratelimitd_request_duration_seconds_count", op="status") == 0
    metrics.on_op("acquire", 0.00002)
    metrics.on_op("acquire", 0.5)
    metrics.on_op("frobnicate", 0.001)
    assert sample("ratelimitd_request_duration_seconds_bucket", op="acquire", le="2.5e-05") == 1
    assert sample("ratelimitd_request_duration_seconds_bucket", op="acquire", le="+Inf") == 2
    assert sample("ratelimitd_request_duration_seconds_count", op="other") == 1

    metrics.on_granted(bucket("gone"), 0.0)
    assert sample("ratelimitd_acquires_total", provider="gone", outcome="granted") == 1
    metrics.on_provider_dropped("gone")
    assert sample("ratelimitd_acquires_total", provider="gone", outcome="granted") is None
