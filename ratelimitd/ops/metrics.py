"""Prometheus metrics of ratelimitd: event counters on the hot path, gauges read at scrape time.

Shell-side but cheap: the acquire path costs one dict lookup and two integer adds
(no locks, no prometheus_client calls; everything runs on the event loop thread,
and so does the scrape). A `Collector` turns those numbers, the service's
`statistics()` and a few daemon-level values into metric families at scrape time.
Every metric name is listed in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import logging
import platform
from bisect import bisect_left
from typing import TYPE_CHECKING, Final, Literal, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from ratelimitd.core.errors import ErrorCode
from ratelimitd.daemon.metrics_hooks import MetricsHooks

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from prometheus_client import CollectorRegistry

    from ratelimitd.core.providers import Bucket, ProviderStats
    from ratelimitd.daemon.config import Config

__all__ = (
    "ACQUIRE_OUTCOMES",
    "BUCKET_STATES",
    "FEATURES",
    "ProviderCounters",
    "REFUSAL_REASONS",
    "OPS",
    "OP_BUCKETS",
    "WAIT_BUCKETS",
    "acquire_families",
    "bucket_families",
    "Metrics",
    "DaemonView",
    "SaveCounts",
    "ServiceView",
)

logger = logging.getLogger(__name__)

AcquireOutcome = Literal["granted", "timeout", "busy", "error"]
# busy: a try-acquire (timeout 0) found no permit; timeout: one that would wait got none in time.
ACQUIRE_OUTCOMES: tuple[AcquireOutcome, ...] = ("granted", "timeout", "busy", "error")
BUCKET_STATES = ("ok", "paused", "cooling_down", "exhausted", "disabled")
FEATURES = ("learning", "recovery", "pacing", "persist")
# Upper bounds of the acquire wait histogram, 0.1 ms to 60 s.
WAIT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_WAIT_BOUNDS: Final = (*WAIT_BUCKETS, float("inf"))
_WAIT_LE = (*(repr(b) for b in WAIT_BUCKETS), "+Inf")  # `le` label values
_FIRST_BOUND: Final = WAIT_BUCKETS[0]  # Final: compiled, a C static
# (listener, reason) of a refused connection; every pair is exported from 0.
REFUSAL_REASONS: tuple[tuple[str, str], ...] = (
    ("socket", "max_connections"),
    ("socket", "max_connections_per_uid"),
    ("http", "max_connections"),
)
# Upper bounds of the per-op handling time histogram, 5 µs to 100 ms.
OP_BUCKETS: tuple[float, ...] = (
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)  # fmt: skip
_OP_BOUNDS = (*OP_BUCKETS, float("inf"))
_OP_LE = (*(repr(b) for b in OP_BUCKETS), "+Inf")
OPS = ("hello", "ping", "acquire", "report", "status", "reset", "other")


class ServiceView(Protocol):
    """What the collector reads from the service at scrape time (`ratelimitd.daemon.service.Service`)."""

    @property
    def config(self) -> Config: ...

    @property
    def connected_clients(self) -> int: ...

    @property
    def refused_connections(self) -> Mapping[tuple[str, str], int]: ...

    @property
    def idle_closed(self) -> int: ...

    @property
    def untrusted_reports(self) -> int: ...

    def statistics(self, *, history: bool = True) -> Mapping[str, ProviderStats]: ...

    def waiting(self) -> int: ...

    @property
    def providers(self) -> Mapping[str, object]: ...


class SaveCounts(Protocol):
    """What the collector reads from the state store (`ratelimitd.ops.persist.StateStore`)."""

    @property
    def saves_ok(self) -> int: ...

    @property
    def saves_failed(self) -> int: ...

    @property
    def last_success_wall(self) -> float | None: ...

    @property
    def buckets_dropped(self) -> int: ...


class DaemonView(Protocol):
    """What the collector reads from the daemon (`ratelimitd.ops.lifecycle.Daemon`)."""

    @property
    def reloads(self) -> Mapping[str, int]: ...  # result ("success", "failure") -> count

    @property
    def last_reload_success_wall(self) -> float | None: ...

    @property
    def last_reload_failed(self) -> bool: ...


class ProviderCounters:
    """Acquire outcomes and the wait histogram of one provider (plain numbers, no locks)."""

    __slots__ = ("refused", "wait_counts", "wait_sum")

    def __init__(self) -> None:
        # Grants are not counted here: each is counted once in the wait histogram.
        self.refused: dict[str, int] = dict.fromkeys(ACQUIRE_OUTCOMES[1:], 0)
        self.wait_counts = [0] * len(_WAIT_BOUNDS)  # per bucket, not cumulative
        self.wait_sum = 0.0

    @property
    def outcomes(self) -> dict[str, int]:
        """Answers by outcome, `granted` first."""
        return {"granted": sum(self.wait_counts), **self.refused}


class Metrics(MetricsHooks):
    """Records the service's events and exposes every ratelimitd metric in `registry`.

    The service's `MetricsHooks`, for Prometheus. Counters that a bucket
    keeps itself (permits granted, reports by status class, rate reductions,
    recoveries and pauses) are read from `statistics()` at scrape time, so the
    status op and the metrics cannot disagree; the hooks count only what nothing
    else does. When metrics are off, the service keeps `NoMetrics`.

    :param registry: where the collector (and the process collector) register; use
        a fresh `CollectorRegistry`, not the global one.
    :param version: exported as `ratelimitd_build_info{version}`.
    :param max_providers: at most this many provider label values are recorded (the
        daemon's `server.max_providers`); events for more are dropped, logged once.
    """

    def __init__(self, registry: CollectorRegistry, *, version: str, max_providers: int) -> None:
        self._providers: dict[str, ProviderCounters] = {}
        # Events of providers past the cap land here and are never exported.
        self._discard = ProviderCounters()
        self._discard_logged = False
        self._max_providers = max_providers
        self._version = version
        self._protocol_errors: dict[str, int] = {code.value: 0 for code in ErrorCode}
        self._service: ServiceView | None = None
        self.per_provider_apart = False
        self._saves: SaveCounts | None = None
        self._wall: Callable[[], float] = lambda: 0.0
        self._ready: Callable[[], bool] = lambda: False
        self._daemon: DaemonView | None = None
        # op -> (per-bucket counts, sum of seconds); every op's series start at 0.
        self._ops: dict[str, tuple[list[int], list[float]]] = {
            op: ([0] * len(_OP_BOUNDS), [0.0]) for op in OPS
        }
        self._start_wall: float | None = None
        registry.register(_Collector(self))
        ProcessCollector(registry=registry)

    def attach(
        self,
        service: ServiceView,
        *,
        wall: Callable[[], float],
        ready: Callable[[], bool],
        saves: SaveCounts | None = None,
        daemon: DaemonView | None = None,
    ) -> None:
        """Read gauges from `service`, `wall()` (unix s), `ready()`, `saves` and `daemon` at each scrape."""
        self._service = service
        self._wall = wall
        self._ready = ready
        self._saves = saves
        self._daemon = daemon
        self._start_wall = wall()

    # -- hooks (ratelimitd.daemon.metrics_hooks.MetricsHooks) ----------------------------------------

    def on_granted(self, bucket: Bucket, waited: float) -> None:
        """One acquire granted after `waited` seconds: one add (two when it waited), counters
        cached on the bucket."""
        counters: ProviderCounters | None = bucket.metrics
        if counters is None:
            counters = bucket.metrics = self._counters(bucket.provider)
        # Most grants do not wait: skip the search, and the sum they leave unchanged.
        if waited <= _FIRST_BOUND:
            counters.wait_counts[0] += 1
        else:
            counters.wait_counts[bisect_left(_WAIT_BOUNDS, waited)] += 1
        if waited:
            counters.wait_sum += waited

    def on_timeout(self, bucket: Bucket) -> None:
        """One acquire answered `timeout`."""
        counters: ProviderCounters | None = bucket.metrics
        if counters is None:
            counters = bucket.metrics = self._counters(bucket.provider)
        counters.refused["timeout"] += 1

    def on_busy(self, bucket: Bucket) -> None:
        """One try-acquire (timeout 0) answered `timeout`: the caller asked, and did not wait."""
        counters: ProviderCounters | None = bucket.metrics
        if counters is None:
            counters = bucket.metrics = self._counters(bucket.provider)
        counters.refused["busy"] += 1

    def on_acquire_error(self, provider: str) -> None:
        """One acquire of a provider the registry holds, refused with another error code."""
        self._counters(provider).refused["error"] += 1

    def on_protocol_error(self, code: ErrorCode) -> None:
        """One error response sent, whatever the op."""
        self._protocol_errors[code.value] += 1

    def on_op(self, op: str, seconds: float) -> None:
        """A sampled request line of `op` took `seconds` to handle."""
        counts, total = self._ops.get(op) or self._ops["other"]
        counts[bisect_left(_OP_BOUNDS, seconds)] += 1
        total[0] += seconds

    def on_provider_dropped(self, provider: str) -> None:
        """An idle provider was dropped: its series go (a later first use starts them at 0)."""
        self._providers.pop(provider, None)

    def _counters(self, provider: str) -> ProviderCounters:
        counters = self._providers.get(provider)
        if counters is not None:
            return counters
        if len(self._providers) >= self._max_providers:
            if not self._discard_logged:
                self._discard_logged = True
                logger.warning(
                    "metrics: more than %d providers; acquires of %r and later ones are not counted",
                    self._max_providers,
                    provider,
                )
            return self._discard
        counters = self._providers[provider] = ProviderCounters()
        return counters

    # -- scrape -------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Every ratelimitd metric family, built now (the process collector is separate).

        While `per_provider_apart` is set (the /metrics handler renders those itself, see
        `ratelimitd.ops.metrics_scrape`), only the daemon-level families.
        """
        if self.per_provider_apart:
            yield from self._ops_families()
            yield from self._daemon_families(len(self._service.providers) if self._service is not None else 0)
            return
        stats = self._service.statistics(history=False) if self._service is not None else {}
        # Series start at 0: every provider the service knows has its acquire series.
        for name in stats:
            self._counters(name)
        yield from acquire_families(self._providers)
        yield from self._ops_families()
        yield from bucket_families(stats, self._wall())
        yield from self._daemon_families(len(stats))

    def counters_of(self, provider: str) -> ProviderCounters:
        """The acquire counters of `provider` (made at 0 if new, within `max_providers`)."""
        return self._counters(provider)

    @property
    def counted_providers(self) -> Mapping[str, ProviderCounters]:
        return self._providers

    def _ops_families(self) -> Iterator[Metric]:
        ops = HistogramMetricFamily(
            "ratelimitd_request_duration_seconds",
            "Seconds the daemon spent handling a request line, by op (one line in 16 is timed); "
            "an acquire's wait for its permit is not included.",
            labels=("op",),
        )
        for op, (counts, total) in self._ops.items():
            cumulative = 0
            buckets = []
            for le, count in zip(_OP_LE, counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            ops.add_metric((op,), buckets, total[0])
        yield ops

    def _daemon_families(self, providers: int) -> Iterator[Metric]:
        service = self._service
        errors = CounterMetricFamily(
            "ratelimitd_protocol_errors",
            "Error responses sent to clients, by error code.",
            labels=("code",),
        )
        for code, count in self._protocol_errors.items():
            errors.add_metric((code,), count)
        yield errors
        features = GaugeMetricFamily(
            "ratelimitd_feature_enabled", "1 when a feature gate is on.", labels=("feature",)
        )
        gates = service.config.features.as_dict() if service is not None else {}
        for feature in FEATURES:
            features.add_metric((feature,), 1.0 if gates.get(feature) else 0.0)
        yield features
        yield GaugeMetricFamily(
            "ratelimitd_connected_clients",
            "Client connections open on the Unix socket.",
            value=service.connected_clients if service is not None else 0,
        )
        refused = CounterMetricFamily(
            "ratelimitd_connections_refused",
            "Connections closed at once, by listener and the limit reached.",
            labels=("listener", "reason"),
        )
        counts = service.refused_connections if service is not None else {}
        for key in REFUSAL_REASONS:
            refused.add_metric(key, counts.get(key, 0))
        yield refused
        yield CounterMetricFamily(
            "ratelimitd_connections_closed_idle",
            "Unix-socket connections closed after idle_timeout with nothing in flight.",
            value=service.idle_closed if service is not None else 0,
        )
        yield CounterMetricFamily(
            "ratelimitd_reports_untrusted",
            "Reports from untrusted peers about permits not theirs: counted, nothing changed.",
            value=service.untrusted_reports if service is not None else 0,
        )
        yield GaugeMetricFamily(
            "ratelimitd_waiting_acquires",
            "Acquires waiting for a permit, over every provider.",
            value=service.waiting() if service is not None else 0,
        )
        store = self._saves
        saves = CounterMetricFamily(
            "ratelimitd_state_saves", "Saves of the learned state, by outcome.", labels=("outcome",)
        )
        saves.add_metric(("success",), store.saves_ok if store is not None else 0)
        saves.add_metric(("failure",), store.saves_failed if store is not None else 0)
        yield saves
        yield CounterMetricFamily(
            "ratelimitd_state_buckets_dropped",
            "Saved buckets dropped at start because their state was malformed (logged, file kept).",
            value=store.buckets_dropped if store is not None else 0,
        )
        last = store.last_success_wall if store is not None else None
        yield GaugeMetricFamily(
            "ratelimitd_state_last_save_timestamp_seconds",
            "Unix time of the last successful state save; 0 before the first one.",
            value=last or 0.0,
        )
        yield GaugeMetricFamily(
            "ratelimitd_ready",
            "1 when the daemon is ready to serve (/readyz).",
            value=1 if self._ready() else 0,
        )
        yield from self._config_families(service, providers)
        info = GaugeMetricFamily(
            "ratelimitd_build_info",
            "The running ratelimitd: version, Python, learning policy and feature gates on; always 1.",
            labels=("version", "python", "policy", "features"),
        )
        policy = service.config.learning.policy if service is not None else ""
        on = ",".join(name for name in FEATURES if gates.get(name)) or "none"
        info.add_metric((self._version, platform.python_version(), policy, on), 1)
        yield info

    def _config_families(self, service: ServiceView | None, providers: int) -> Iterator[Metric]:
        """Reloads, and the provider count against its cap."""
        daemon = self._daemon
        reloads = CounterMetricFamily(
            "ratelimitd_config_reloads", "Configuration reloads (SIGHUP), by result.", labels=("result",)
        )
        for result in ("success", "failure"):
            reloads.add_metric((result,), daemon.reloads.get(result, 0) if daemon is not None else 0)
        yield reloads
        yield GaugeMetricFamily(
            "ratelimitd_config_last_reload_successful",
            "1 when the last reload worked (or none was tried), 0 after a failed one.",
            value=0 if daemon is not None and daemon.last_reload_failed else 1,
        )
        last = daemon.last_reload_success_wall if daemon is not None else None
        yield GaugeMetricFamily(
            "ratelimitd_config_last_reload_success_timestamp_seconds",
            "Unix time the running configuration was loaded (at start or by the last good reload).",
            value=last if last is not None else (self._start_wall or 0.0),
        )
        yield GaugeMetricFamily(
            "ratelimitd_providers",
            "Providers known now: configured ones and those created on first use.",
            value=providers,
        )
        yield GaugeMetricFamily(
            "ratelimitd_providers_max",
            "The cap on providers (server.max_providers).",
            value=service.config.server.max_providers if service is not None else self._max_providers,
        )


def acquire_families(providers: Mapping[str, ProviderCounters]) -> Iterator[Metric]:
    """Acquire outcomes and the wait histogram of each provider."""
    acquires = CounterMetricFamily(
        "ratelimitd_acquires",
        "Acquire requests answered, by provider and outcome (granted; timeout; busy: a try-acquire "
        "with timeout 0 found no permit; error).",
        labels=("provider", "outcome"),
    )
    waits = HistogramMetricFamily(
        "ratelimitd_acquire_wait_seconds",
        "Seconds a granted acquire waited for its permit.",
        labels=("provider",),
    )
    for provider, counters in providers.items():
        for outcome, count in counters.outcomes.items():
            acquires.add_metric((provider, outcome), count)
        cumulative = 0
        buckets = []
        for le, count in zip(_WAIT_LE, counters.wait_counts, strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        waits.add_metric((provider,), buckets, counters.wait_sum)
    yield acquires
    yield waits


def bucket_families(stats: Mapping[str, ProviderStats], wall: float) -> Iterator[Metric]:
    """Per-bucket counters and gauges from the service's statistics snapshot."""
    pb = ("provider", "bucket")
    pbu = ("provider", "bucket", "unit")
    granted = CounterMetricFamily("ratelimitd_permits_granted", "Permits granted.", labels=pb)
    reports = CounterMetricFamily(
        "ratelimitd_reports",
        "Calls reported by clients, by HTTP status class (2xx, 3xx, 4xx, 429, 5xx, network_error).",
        labels=(*pb, "status_class"),
    )
    changes = CounterMetricFamily(
        "ratelimitd_rate_changes",
        "Times the rate was changed, by direction (down, up) and reason (429s, retry_after, "
        "announced_limit, pacing, quota, overload, auth, noise_undone, recovery, reset, other).",
        labels=(*pb, "direction", "reason"),
    )
    pauses = CounterMetricFamily(
        "ratelimitd_pauses",
        "Pauses of the whole bucket, by reason (retry_after, overload, pacing, ...).",
        labels=(*pb, "reason"),
    )
    paused = CounterMetricFamily(
        "ratelimitd_paused_seconds", "Seconds the bucket spent paused, the running pause included.", labels=pb
    )
    resets = CounterMetricFamily("ratelimitd_resets", "Resets (the reset op) of the bucket.", labels=pb)
    last_change = GaugeMetricFamily(
        "ratelimitd_bucket_last_change_timestamp_seconds",
        "Unix time of the bucket's last rate change, pause, spent quota or disable; `reason` says why.",
        labels=(*pb, "reason"),
    )
    fill = GaugeMetricFamily(
        "ratelimitd_bucket_fill_ratio",
        "Share of the burst available now (requests, else the first unit); 0 when paused or in debt.",
        labels=pb,
    )
    malformed = CounterMetricFamily(
        "ratelimitd_malformed_headers",
        "Rate-limit headers in reports that did not parse and were ignored.",
        labels=pb,
    )
    suspicious = CounterMetricFamily(
        "ratelimitd_suspicious_headers",
        "Waits in report headers longer than max_pause without quota evidence, capped.",
        labels=pb,
    )
    rate = GaugeMetricFamily(
        "ratelimitd_bucket_rate_per_second",
        "Current rate (after learning), units per second.",
        labels=pbu,
    )
    baseline = GaugeMetricFamily(
        "ratelimitd_bucket_baseline_per_second", "Configured rate, units per second.", labels=pbu
    )
    ratio = GaugeMetricFamily("ratelimitd_bucket_rate_ratio", "Current rate / configured rate.", labels=pbu)
    shadow = GaugeMetricFamily(
        "ratelimitd_bucket_shadow_rate_per_second",
        "The rate learning would set (equal to the current rate when learning is on).",
        labels=pbu,
    )
    streak = GaugeMetricFamily("ratelimitd_bucket_streak", "Consecutive 429 answers counted.", labels=pb)
    waiters = GaugeMetricFamily("ratelimitd_bucket_waiters", "Acquires waiting on the bucket.", labels=pb)
    state = GaugeMetricFamily(
        "ratelimitd_bucket_state",
        "1 for the bucket's current state, 0 for the others.",
        labels=(*pb, "state"),
    )
    pause_left = GaugeMetricFamily(
        "ratelimitd_bucket_pause_remaining_seconds",
        "Seconds until a pause ends; 0 when not paused.",
        labels=pb,
    )
    for provider, provider_stats in stats.items():
        for bucket, b in provider_stats.buckets.items():
            key = (provider, bucket)
            granted.add_metric(key, b.granted)
            for status_class, count in b.reports.items():
                reports.add_metric((*key, status_class), count)
            events = b.events
            # The series alerts read start at 0; the others appear at their first event.
            counts = {("down", "429s"): 0, **events.changes}
            for (direction, cause), count in counts.items():
                changes.add_metric((*key, direction, cause), count)
            for cause, count in {"retry_after": 0, **events.pauses}.items():
                pauses.add_metric((*key, cause), count)
            paused.add_metric(key, events.paused_seconds)
            resets.add_metric(key, events.resets)
            if events.reason is not None and events.reason_since is not None:
                last_change.add_metric((*key, events.reason), events.reason_since)
            fill.add_metric(key, b.fill)
            malformed.add_metric(key, b.malformed_headers)
            suspicious.add_metric(key, b.suspicious_headers)
            for unit, limit in b.limits.items():
                unit_key = (*key, unit)
                rate.add_metric(unit_key, limit.rate)
                baseline.add_metric(unit_key, limit.baseline)
                ratio.add_metric(unit_key, limit.rate / limit.baseline if limit.baseline > 0 else 0.0)
                shadow.add_metric(unit_key, limit.shadow_rate)
            streak.add_metric(key, b.streak)
            waiters.add_metric(key, b.waiters)
            for name in BUCKET_STATES:
                state.add_metric((*key, name), 1.0 if b.state == name else 0.0)
            remaining = 0.0 if b.paused_until is None else max(0.0, b.paused_until - wall)
            pause_left.add_metric(key, remaining)
    yield from (granted, reports, changes, pauses, paused, resets, malformed, suspicious)
    yield from (rate, baseline, ratio, shadow, streak, waiters, state, pause_left, last_change, fill)


class _Collector:
    """Adapts `Metrics.collect` to prometheus_client's Collector protocol."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()
