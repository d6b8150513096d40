"""The /metrics body at thousands of providers: per-provider lines built in slices and remembered.

Shell: runs on the event loop. The per-provider families (about 48 series a provider)
are most of a scrape; prometheus_client builds a sample object per series and encodes
it at ~3 µs, seconds for 10,000 providers. Here each provider's sample lines are built
from the same families (`acquire_families`, `bucket_families`) and kept with a
signature of the numbers they came from: the next scrape reuses them unless the
provider changed. Providers are read in slices, and the loop serves acquires between
slices. The daemon-level families, the process and backend collectors still come
from the registry, encoded by prometheus_client (OpenMetrics or text, as asked).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString as _untyped_go_float

from ratelimitd.daemon.status import provider_statistics
from ratelimitd.ops.metrics import acquire_families, bucket_families

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from ratelimitd.core.providers import Provider
    from ratelimitd.daemon.clock import Clock
    from ratelimitd.ops.metrics import Metrics, ProviderCounters

__all__ = ("SLICE_PROVIDERS", "MetricsScrape", "ScrapeSource")

# The loop is given back after this many seconds of building (or SLICE_PROVIDERS providers).
SLICE_SECONDS: Final = 0.003
SLICE_PROVIDERS: Final = 500
# Providers per piece of the body: ~0.1 MB for the largest family (the wait histogram).
_PIECE_PROVIDERS: Final = 1000
_OPENMETRICS: Final = "application/openmetrics-text"

# One bytes of sample lines per per-provider family: bytes, not str, since they are kept
# (16 bytes less per object, ~5 MB at 10,000 providers) and written as they are.
Lines = tuple[bytes, ...]


class ScrapeSource(Protocol):
    """What the scrape reads (`ratelimitd.daemon.service.Service`)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def providers(self) -> Mapping[str, Provider]: ...


class MetricsScrape:
    """Builds /metrics bodies for `metrics` (its registry is `registry`) over `source`."""

    def __init__(self, metrics: Metrics, registry: CollectorRegistry, source: ScrapeSource) -> None:
        self._metrics = metrics
        self._registry = registry
        self._source = source
        self._remembered: dict[str, tuple[tuple[object, ...], Lines]] = {}
        empty = [*acquire_families({}), *bucket_families({}, 0.0)]
        self._heads = {
            False: [_head(family, openmetrics=False) for family in empty],
            True: [_head(family, openmetrics=True) for family in empty],
        }

    async def body(self, accept: str) -> tuple[AsyncIterator[bytes], str]:
        """The body, as pieces to write one after the other while they are made, and its
        content type for a scraper's `Accept` header. Pieces are about 0.1 MB at 10,000
        providers: the loop runs between them, and the whole body is never in memory."""
        encoder, content_type = choose_encoder(accept)
        per_provider = await self._provider_lines()
        heads = self._heads[content_type.startswith(_OPENMETRICS)]
        return self._pieces(per_provider, heads, encoder), content_type

    async def _pieces(
        self, per_provider: list[Lines], heads: list[str], encoder: Callable[[CollectorRegistry], bytes]
    ) -> AsyncIterator[bytes]:
        for index, head in enumerate(heads):
            yield head.encode()
            for first in range(0, len(per_provider), _PIECE_PROVIDERS):
                group = per_provider[first : first + _PIECE_PROVIDERS]
                yield b"".join([lines[index] for lines in group])
        # The rest is small (daemon-level families, process, backend): encoded at once, last
        # (an OpenMetrics body ends with its `# EOF`).
        self._metrics.per_provider_apart = True
        try:
            rest = encoder(self._registry)
        finally:
            self._metrics.per_provider_apart = False
        yield rest

    async def _provider_lines(self) -> list[Lines]:
        source = self._source
        providers = source.providers
        names = list(providers)
        remembered = self._remembered
        found: list[Lines] = []
        first = 0
        while first < len(names):
            if first:
                await asyncio.sleep(0)  # acquires run between slices
            now, wall = source.clock.monotonic(), source.clock.wall()
            give_back_at = time.perf_counter() + SLICE_SECONDS
            for name in names[first : first + SLICE_PROVIDERS]:
                first += 1
                provider = providers.get(name)
                if provider is None:
                    continue  # dropped meanwhile
                counters = self._metrics.counters_of(name)
                signature = _signature(provider, counters, now)
                known = remembered.get(name)
                if known is not None and signature is not None and known[0] == signature:
                    found.append(known[1])
                    continue
                lines = self._lines(name, provider, counters, now, wall)
                if signature is None:
                    remembered.pop(name, None)
                else:
                    remembered[name] = (signature, lines)
                found.append(lines)
                if time.perf_counter() > give_back_at:
                    break
        # Counters of providers no longer served (removed by a reload) keep their series.
        gone = {n: c for n, c in self._metrics.counted_providers.items() if n not in providers}
        if gone:
            found.append(tuple(_samples(f) for f in acquire_families(gone)) + (b"",) * _bucket_family_count())
        for name in [n for n in remembered if n not in providers]:
            del remembered[name]
        return found

    @staticmethod
    def _lines(name: str, provider: Provider, counters: ProviderCounters, now: float, wall: float) -> Lines:
        stats = {name: provider_statistics(provider, now, wall, history=False)}
        families = [*acquire_families({name: counters}), *bucket_families(stats, wall)]
        return tuple(_samples(family) for family in families)


def _bucket_family_count() -> int:
    return len(list(bucket_families({}, 0.0)))


def _signature(provider: Provider, counters: ProviderCounters, now: float) -> tuple[object, ...] | None:
    """Everything a provider's lines are made of, or None while they change with time alone.

    A bucket's series move only with its counters (grants, timeouts, reports: a report
    is what changes any header- or learning-derived number), its limiter (scale, or a
    new one after a reload) and the learner's streak, shadow factor and state; a pause,
    quota or disable counts down by itself, so such a provider is rebuilt each scrape.
    """
    # Grants are in each bucket's `granted` below; the refused answers are counted here.
    parts: list[object] = [provider.config, *counters.refused.values()]
    for bucket in provider.buckets.values():
        learner = bucket.learner
        if (
            learner.pause_until is not None
            or learner.exhausted_until is not None
            or learner.disabled_until is not None
        ):
            return None
        limiter = bucket.limiter
        parts += (
            bucket,
            limiter,
            limiter.scale,
            bucket.granted,
            bucket.timeouts,
            sum(bucket.reports.values()),
            bucket.reductions,
            bucket.recoveries,
            bucket.pauses,
            bucket.malformed_headers,
            bucket.queue.live,
            learner.streak,
            learner.shadow_factor,
            learner.state(now),
        )
    return tuple(parts)


def _go_float(value: float) -> str:
    """A sample value as Prometheus' Go code writes it (prometheus_client's own function)."""
    text: str = _untyped_go_float(value)  # type: ignore[no-untyped-call]
    return text


def _head(family: Metric, *, openmetrics: bool) -> str:
    """`# HELP` and `# TYPE` as prometheus_client writes them for this format."""
    name = family.name
    if family.type == "counter" and not openmetrics:
        name += "_total"  # the text format names a counter by its sample
    help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        help_text = help_text.replace('"', r"\"")
    return f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n"


def _samples(family: Metric) -> bytes:
    """The family's sample lines, labels sorted by name as prometheus_client writes them."""
    text = "".join(
        f"{sample.name}{{{_labels(sample.labels.items())}}} {_go_float(sample.value)}\n"
        for sample in family.samples
    )
    return text.encode()


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    # Names of providers, buckets and units are `A-Z a-z 0-9 . _ - :` (checked where they
    # come in), the other values fixed words: escaping is for the odd one out.
    return ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(pairs))


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value
