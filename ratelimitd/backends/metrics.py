"""Prometheus series of the redis backend, read at scrape time (nothing on the acquire path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.core import Metric

    from ratelimitd.backends.redis_backend import RedisBackend

__all__ = ("BackendCollector",)


class BackendCollector:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend

    def describe(self) -> list[Metric]:
        return []  # built at each scrape: the buckets change

    def collect(self) -> Iterator[Metric]:
        backend = self.backend
        up = GaugeMetricFamily(
            "ratelimitd_backend_up",
            "1 while the shared backend answers; 0 in local fallback",
            labels=["kind"],
        )
        up.add_metric(["redis"], 1.0 if backend.up else 0.0)
        yield up
        trips = CounterMetricFamily("ratelimitd_backend_round_trips", "Redis calls made by this host")
        trips.add_metric([], backend.round_trips)
        yield trips
        fallbacks = CounterMetricFamily(
            "ratelimitd_backend_fallbacks", "times this host fell back to local limiting"
        )
        fallbacks.add_metric([], backend.fallbacks)
        yield fallbacks
        lease = GaugeMetricFamily(
            "ratelimitd_backend_lease",
            "units leased from the shared bucket and not yet granted",
            labels=["provider", "bucket", "unit"],
        )
        for (provider, name), shared in backend.shared.items():
            for unit, amount in shared.limiter.balance.items():
                lease.add_metric([provider, name, unit], amount)
        yield lease
