"""Prometheus metrics of ratelimitd: event counters on the hot path, gauges read at scrape time.

Shell-side but cheap: the acquire path costs one dict lookup and two integer adds
(no locks, no prometheus_client calls; everything runs on the event loop thread,
and so does the scrape). A `Collector` turns those numbers, the service's
`statistics()` and a few daemon-level values into metric families at scrape time.
Every metric name is listed in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from ratelimitd.core.errors import ErrorCode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from prometheus_client import CollectorRegistry

    from ratelimitd.core.providers import Bucket, ProviderStats
    from ratelimitd.daemon.config import Config

__all__ = (
    "ACQUIRE_OUTCOMES",
    "BUCKET_STATES",
    "FEATURES",
    "REFUSAL_REASONS",
    "WAIT_BUCKETS",
    "Metrics",
    "SaveCounts",
    "ServiceView",
)

logger = logging.getLogger(__name__)

AcquireOutcome = Literal["granted", "timeout", "error"]
ACQUIRE_OUTCOMES: tuple[AcquireOutcome, ...] = ("granted", "timeout", "error")
BUCKET_STATES = ("ok", "paused", "cooling_down", "exhausted", "disabled")
FEATURES = ("learning", "recovery", "pacing", "persist")
# Upper bounds of the acquire wait histogram, 0.1 ms to 60 s.
WAIT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_WAIT_BOUNDS = (*WAIT_BUCKETS, float("inf"))
_WAIT_LE = (*(repr(b) for b in WAIT_BUCKETS), "+Inf")  # `le` label values
_FIRST_BOUND = WAIT_BUCKETS[0]
# (listener, reason) of a refused connection; every pair is exported from 0.
REFUSAL_REASONS: tuple[tuple[str, str], ...] = (
    ("socket", "max_connections"),
    ("socket", "max_connections_per_uid"),
    ("http", "max_connections"),
)


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


class SaveCounts(Protocol):
    """What the collector reads from the state store (`ratelimitd.ops.persist.StateStore`)."""

    @property
    def saves_ok(self) -> int: ...

    @property
    def saves_failed(self) -> int: ...

    @property
    def last_success_wall(self) -> float | None: ...


class _ProviderCounters:
    """Acquire outcomes and the wait histogram of one provider (plain numbers, no locks)."""

    __slots__ = ("outcomes", "wait_counts", "wait_sum")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = dict.fromkeys(ACQUIRE_OUTCOMES, 0)
        self.wait_counts = [0] * len(_WAIT_BOUNDS)  # per bucket, not cumulative
        self.wait_sum = 0.0


class Metrics:
    """Records the service's events and exposes every ratelimitd metric in `registry`.

    Implements `ratelimitd.daemon.metrics_hooks.MetricsHooks`. Counters that a bucket
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
        self._providers: dict[str, _ProviderCounters] = {}
        # Events of providers past the cap land here and are never exported.
        self._discard = _ProviderCounters()
        self._discard_logged = False
        self._max_providers = max_providers
        self._version = version
        self._protocol_errors: dict[str, int] = {code.value: 0 for code in ErrorCode}
        self._service: ServiceView | None = None
        self._saves: SaveCounts | None = None
        self._wall: Callable[[], float] = lambda: 0.0
        self._ready: Callable[[], bool] = lambda: False
        registry.register(_Collector(self))
        ProcessCollector(registry=registry)

    def attach(
        self,
        service: ServiceView,
        *,
        wall: Callable[[], float],
        ready: Callable[[], bool],
        saves: SaveCounts | None = None,
    ) -> None:
        """Read gauges from `service`, `wall()` (unix s), `ready()` and `saves` at each scrape."""
        self._service = service
        self._wall = wall
        self._ready = ready
        self._saves = saves

    # -- hooks (ratelimitd.daemon.metrics_hooks.MetricsHooks) ----------------------------------------

    def on_granted(self, bucket: Bucket, waited: float) -> None:
        """One acquire granted after `waited` seconds: two adds, counters cached on the bucket."""
        counters: _ProviderCounters | None = bucket.metrics
        if counters is None:
            counters = bucket.metrics = self._counters(bucket.provider)
        counters.outcomes["granted"] += 1
        # Most grants do not wait: skip the search for them.
        if waited <= _FIRST_BOUND:
            counters.wait_counts[0] += 1
        else:
            counters.wait_counts[bisect_left(_WAIT_BOUNDS, waited)] += 1
        counters.wait_sum += waited

    def on_timeout(self, bucket: Bucket) -> None:
        """One acquire answered `timeout`."""
        counters: _ProviderCounters | None = bucket.metrics
        if counters is None:
            counters = bucket.metrics = self._counters(bucket.provider)
        counters.outcomes["timeout"] += 1

    def on_acquire_error(self, provider: str) -> None:
        """One acquire of a provider the registry holds, refused with another error code."""
        self._counters(provider).outcomes["error"] += 1

    def on_protocol_error(self, code: ErrorCode) -> None:
        """One error response sent, whatever the op."""
        self._protocol_errors[code.value] += 1

    def on_provider_dropped(self, provider: str) -> None:
        """An idle provider was dropped: its series go (a later first use starts them at 0)."""
        self._providers.pop(provider, None)

    def _counters(self, provider: str) -> _ProviderCounters:
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
        counters = self._providers[provider] = _ProviderCounters()
        return counters

    # -- scrape -------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Every ratelimitd metric family, built now (the process collector is separate)."""
        stats = self._service.statistics(history=False) if self._service is not None else {}
        # Series start at 0: every provider the service knows has its acquire series.
        for name in stats:
            self._counters(name)
        yield from self._acquire_families()
        yield from _bucket_families(stats, self._wall())
        yield from self._daemon_families()

    def _acquire_families(self) -> Iterator[Metric]:
        acquires = CounterMetricFamily(
            "ratelimitd_acquires",
            "Acquire requests answered, by provider and outcome (granted, timeout, error).",
            labels=("provider", "outcome"),
        )
        waits = HistogramMetricFamily(
            "ratelimitd_acquire_wait_seconds",
            "Seconds a granted acquire waited for its permit.",
            labels=("provider",),
        )
        for provider, counters in self._providers.items():
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

    def _daemon_families(self) -> Iterator[Metric]:
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
        info = GaugeMetricFamily(
            "ratelimitd_build_info", "The running ratelimitd version; always 1.", labels=("version",)
        )
        info.add_metric((self._version,), 1)
        yield info


def _bucket_families(stats: Mapping[str, ProviderStats], wall: float) -> Iterator[Metric]:
    """Per-bucket counters and gauges from the service's statistics snapshot."""
    pb = ("provider", "bucket")
    pbu = ("provider", "bucket", "unit")
    granted = CounterMetricFamily("ratelimitd_permits_granted", "Permits granted.", labels=pb)
    reports = CounterMetricFamily(
        "ratelimitd_reports",
        "Calls reported by clients, by HTTP status class (2xx, 3xx, 4xx, 429, 5xx, network_error).",
        labels=(*pb, "status_class"),
    )
    reductions = CounterMetricFamily(
        "ratelimitd_rate_reductions", "Times the rate was cut after 429s.", labels=pb
    )
    recoveries = CounterMetricFamily(
        "ratelimitd_rate_recoveries",
        "Times the rate was raised back toward the baseline.",
        labels=pb,
    )
    pauses = CounterMetricFamily(
        "ratelimitd_pauses",
        "Pauses of the whole bucket (Retry-After, quota reset, overload).",
        labels=pb,
    )
    malformed = CounterMetricFamily(
        "ratelimitd_malformed_headers",
        "Rate-limit headers in reports that did not parse and were ignored.",
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
            reductions.add_metric(key, b.reductions)
            recoveries.add_metric(key, b.recoveries)
            pauses.add_metric(key, b.pauses)
            malformed.add_metric(key, b.malformed_headers)
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
    yield from (granted, reports, reductions, recoveries, pauses, malformed)
    yield from (rate, baseline, ratio, shadow, streak, waiters, state, pause_left)


class _Collector:
    """Adapts `Metrics.collect` to prometheus_client's Collector protocol."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()
