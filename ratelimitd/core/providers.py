"""Providers and their buckets (one per API key): limits, counters, bounded history.

Pure: no asyncio, no clock reads. The wait queues and the learning policy are
attached by the service; this module keeps the state they act on and the
frozen snapshots (`statistics`) that the status op, metrics and persistence read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ratelimitd.core.causes import NO_EVENTS, EventStats
from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.limiter import BucketLimiter, LimitSpec

if TYPE_CHECKING:
    from ratelimitd.daemon.config import Config, ProviderConfig

__all__ = (
    "STATUS_CLASSES",
    "Bucket",
    "BucketStats",
    "LimitStats",
    "Provider",
    "ProviderStats",
    "Registry",
    "status_class",
)

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "429", "5xx", "network_error")


def status_class(status: int | None) -> str:
    """A bounded label for a report's status (metrics and counters)."""
    if status is None:
        return "network_error"
    if status == 429:
        return "429"
    return _STATUS_CLASSES[status // 100]


# By the status's first digit (a protocol status is 100-599): no string built per report.
_STATUS_CLASSES: Final = tuple(f"{digit}xx" for digit in range(10))


@dataclass(frozen=True, slots=True)
class LimitStats:
    rate: float
    baseline: float
    period: float
    burst: float
    shadow_rate: float


@dataclass(frozen=True, slots=True)
class BucketStats:
    limits: dict[str, LimitStats]
    streak: int
    state: str
    paused_until: float | None
    granted: int
    timeouts: int
    reports: dict[str, int]
    waiters: int
    factor: float
    shadow_factor: float
    ceiling: float | None
    reductions: int
    recoveries: int
    pauses: int
    history: list[dict[str, Any]] = field(default_factory=list)
    malformed_headers: int = 0
    suspicious_headers: int = 0
    # Why the bucket cannot serve now (a selection reason code) and when it can, in seconds.
    why: str | None = None
    available_in: float | None = None
    # What learning did, by cause (core.causes), and the share of the burst available now.
    events: EventStats = NO_EVENTS
    fill: float = 1.0
    # Whom a 429's Retry-After holds ("bucket" or "request"), the setting and why.
    retry_after_scope: dict[str, str] | None = None

    def as_json(self, *, history: bool = True) -> dict[str, Any]:
        """The status op's view; `history=False` leaves the `history` key out."""
        body = {
            "limits": {
                unit: {
                    "rate": lim.rate,
                    "baseline": lim.baseline,
                    "period": lim.period,
                    "burst": lim.burst,
                    "shadow_rate": lim.shadow_rate,
                }
                for unit, lim in self.limits.items()
            },
            "streak": self.streak,
            "state": self.state,
            "why": self.why,
            "available_in": self.available_in,
            "paused_until": self.paused_until,
            "granted": self.granted,
            "timeouts": self.timeouts,
            "reports": self.reports,
            "waiters": self.waiters,
            "factor": self.factor,
            "shadow_factor": self.shadow_factor,
            "ceiling": self.ceiling,
            "reductions": self.reductions,
            "recoveries": self.recoveries,
            "pauses": self.pauses,
            "malformed_headers": self.malformed_headers,
            "fill": round(self.fill, 4),
            "events": self.events.as_json(),
            "suspicious_headers": self.suspicious_headers,
            "retry_after_scope": self.retry_after_scope,
        }
        if history:
            body["history"] = self.history
        return body


@dataclass(frozen=True, slots=True)
class ProviderStats:
    buckets: dict[str, BucketStats]
    configured: bool
    selection: str

    def as_json(self, *, history: bool = True) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "selection": self.selection,
            "buckets": {name: b.as_json(history=history) for name, b in self.buckets.items()},
        }


class Bucket:
    """One API key of a provider: its limiter and what happened to it."""

    __slots__ = (
        "applied_pause",
        "events",
        "granted",
        "learner",
        "ledger",
        "limiter",
        "malformed_headers",
        "metrics",
        "name",
        "pauses",
        "periods",
        "provider",
        "queue",
        "recoveries",
        "reductions",
        "reports",
        "suspicious_headers",
        "timeouts",
    )

    def __init__(self, provider: str, name: str, config: ProviderConfig, now: float) -> None:
        self.provider = provider
        self.name = name
        self.limiter = BucketLimiter(
            {lim.unit: LimitSpec(lim.rate_per_second, lim.burst) for lim in config.limits}, now
        )
        self.periods = {lim.unit: lim.period for lim in config.limits}
        self.granted = 0
        self.timeouts = 0
        self.reports: dict[str, int] = dict.fromkeys(STATUS_CLASSES, 0)
        self.applied_pause: float | None = None
        self.reductions = 0
        self.malformed_headers = 0  # report headers ignored because they did not parse
        self.suspicious_headers = 0  # report waits capped: longer than max_pause, no quota evidence
        self.recoveries = 0
        self.pauses = 0
        self.events: Any = None  # core.causes.BucketEvents, made on the first learning event
        # Attached by the service: the wait queue, the learner and the metric children.
        self.queue: Any = None
        self.learner: Any = None
        self.ledger: Any = None  # the costs of recent grants, by permit (settlement.py)
        self.metrics: Any = None

    def reconfigure(self, config: ProviderConfig, now: float) -> None:
        """Apply new limits (reload), keeping fill levels and the learned scale."""
        specs = {lim.unit: LimitSpec(lim.rate_per_second, lim.burst) for lim in config.limits}
        old = self.limiter
        fresh = BucketLimiter(specs, now)
        for unit, limit in fresh.units.items():
            if unit in old.units:
                used = max(0.0, old.units[unit].burst - old.units[unit].available(now))
                limit.take(min(used, limit.burst), now)
        if old.scale != 1.0:
            fresh.set_scale(old.scale, now)
        self.limiter = fresh
        self.periods = {lim.unit: lim.period for lim in config.limits}


class Provider:
    __slots__ = (
        "buckets", "config", "configured", "name", "one_request_fits", "order", "rotating", "rotation",
        "units",
    )  # fmt: skip

    def __init__(self, config: ProviderConfig, *, configured: bool, now: float) -> None:
        self.name = config.name
        self.config = config
        self.configured = configured
        self.buckets = {name: Bucket(config.name, name, config, now) for name in config.buckets}
        self.rotation = 0  # next index for round_robin
        self._derive()

    def _derive(self) -> None:
        """Facts the acquire hot path reads instead of recomputing them per request."""
        buckets = tuple(self.buckets.values())
        # The buckets in the order a grant-now scan tries them, or () when the choice needs
        # every bucket's state at once (most_headroom with several keys).
        several_by_headroom = len(buckets) > 1 and self.config.selection == "most_headroom"
        self.order: tuple[Bucket, ...] = () if several_by_headroom else buckets
        self.rotating = len(buckets) > 1 and self.config.selection == "round_robin"
        requests = buckets[0].limiter.units.get("requests")
        self.one_request_fits = requests is None or requests.burst >= 1.0
        self.units = frozenset(buckets[0].limiter.units)  # every bucket limits the same units

    def limited_part(self, cost: dict[str, float]) -> tuple[dict[str, float], tuple[str, ...]]:
        """`cost` without the units this provider does not limit, and the units so dropped.

        Dropped before anything waits, so a cost map full of unknown names costs nothing
        to keep or to estimate. `requests` is never listed as dropped: every acquire counts
        one call, whether or not the provider limits calls (protocol.md, acquire).
        """
        units = self.units
        for unit in cost:
            if unit not in units:
                break
        else:
            return cost, ()
        kept = {unit: amount for unit, amount in cost.items() if unit in units}
        ignored = tuple(unit for unit in cost if unit not in units and unit != "requests")
        return kept, ignored

    def reconfigure(self, config: ProviderConfig, now: float) -> list[Bucket]:
        """Apply a reloaded config; return the buckets that were removed."""
        self.config = config
        removed = [b for name, b in self.buckets.items() if name not in config.buckets]
        kept = {}
        for name in config.buckets:
            bucket = self.buckets.get(name) or Bucket(self.name, name, config, now)
            bucket.reconfigure(config, now)
            kept[name] = bucket
        self.buckets = kept
        self._derive()
        return removed


class Registry:
    """Providers by name: the configured ones, and others created on first use up to `max_providers`."""

    def __init__(self, config: Config, now: float) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {}
        for name, provider_config in config.providers.items():
            self.providers[name] = Provider(provider_config, configured=True, now=now)

    def get(self, name: str, now: float, *, create: bool) -> Provider:
        """The provider `name`; created from the defaults when allowed, else a RatelimitdError."""
        provider = self.providers.get(name)
        if provider is not None:
            return provider
        if not create or not self.config.server.create_providers:
            raise RatelimitdError(
                ErrorCode.UNKNOWN_PROVIDER,
                f"provider: no provider named {name!r} is configured and providers are not created on demand",
            )
        if len(self.providers) >= self.config.server.max_providers:
            raise RatelimitdError(
                ErrorCode.TOO_MANY_PROVIDERS,
                f"provider: creating {name!r} would pass max_providers ({self.config.server.max_providers})",
            )
        provider = Provider(self.config.provider_for(name), configured=False, now=now)
        self.providers[name] = provider
        return provider

    def buckets(self) -> list[Bucket]:
        return [bucket for provider in self.providers.values() for bucket in provider.buckets.values()]
