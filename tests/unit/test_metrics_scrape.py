"""The sliced /metrics body: the same samples as the registry's full collection, kept fresh."""

from __future__ import annotations

import contextlib
import tomllib
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from ratelimitd.core.errors import RatelimitdError
from ratelimitd.core.protocol import parse_request
from ratelimitd.daemon.config import parse_config
from ratelimitd.daemon.service import Service
from ratelimitd.ops.metrics import Metrics
from ratelimitd.ops.metrics_scrape import MetricsScrape

if TYPE_CHECKING:
    import asyncio

    from ratelimitd.daemon.clock import FakeClock

CONFIG = """
[providers.one]
rate = "2/second"
burst = 2

[providers.keys]
limits = [
  { unit = "requests", rate = "2/second", burst = 2 },
  { unit = "tokens", rate = "50/second", burst = 100 },
]
buckets = ["a", "b"]
""" + "".join(f'[providers.m{i:03d}]\nrate = "1/second"\n' for i in range(250))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str, *, openmetrics: bool = False) -> Samples:
    families = (
        parse_openmetrics(text)  # type: ignore[no-untyped-call]
        if openmetrics
        else text_string_to_metric_families(text)
    )
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
        if not sample.name.startswith("process_")  # read from /proc at each call
    }


@pytest.fixture
def daemon(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> tuple[Service, CollectorRegistry, MetricsScrape]:
    config = parse_config(tomllib.loads(CONFIG), {"RATELIMITD_FEATURE_LEARNING": "1"}, "test.toml")
    service = Service(config, fake_clock, loop)
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="1.2.3", max_providers=1000)
    metrics.attach(service, wall=fake_clock.wall, ready=lambda: True)
    service.metrics = metrics
    return service, registry, MetricsScrape(metrics, registry, service)


def _run(service: Service, line: str) -> None:
    with contextlib.suppress(RatelimitdError):  # refusals are counted too
        service.handle(parse_request(line.encode(), max_timeout=60.0))


def _body(loop: asyncio.AbstractEventLoop, scrape: MetricsScrape, accept: str = "") -> tuple[str, str]:
    async def read() -> tuple[list[bytes], str]:
        pieces, content_type = await scrape.body(accept)
        return [piece async for piece in pieces], content_type

    pieces, content_type = loop.run_until_complete(read())
    assert len(pieces) > 20  # written piece by piece
    return b"".join(pieces).decode(), content_type


def test_the_sliced_body_has_every_sample_the_registry_has(
    daemon: tuple[Service, CollectorRegistry, MetricsScrape],
    loop: asyncio.AbstractEventLoop,
    fake_clock: FakeClock,
) -> None:
    service, registry, scrape = daemon
    for _ in range(3):
        _run(service, '{"op":"acquire","provider":"one","timeout":0}')
    _run(service, '{"op":"acquire","provider":"keys","cost":{"tokens":60},"timeout":0}')
    _run(service, '{"op":"report","provider":"keys","bucket":"b","status":429,"retry_after":5}')
    _run(service, '{"op":"report","provider":"one","status":401}')
    _run(service, '{"op":"report","provider":"m007","status":200,"headers":{"x-ratelimit-remaining":"x"}}')
    text = ""
    for _ in range(2):  # the second time from what the first one remembered
        text, content_type = _body(loop, scrape)
        assert content_type.startswith("text/plain")
        assert _samples(text) == _samples(generate_latest(registry).decode())
        fake_clock.advance(1.0)  # the pause counts down: its gauge must follow

    samples = _samples(text)
    assert samples[("ratelimitd_permits_granted_total", (("bucket", "default"), ("provider", "one")))] == 2
    assert (
        samples[("ratelimitd_bucket_state", (("bucket", "b"), ("provider", "keys"), ("state", "paused")))]
        == 1
    )
    assert samples[("ratelimitd_malformed_headers_total", (("bucket", "default"), ("provider", "m007")))] == 1


def test_a_changed_provider_is_rebuilt_and_the_others_reused(
    daemon: tuple[Service, CollectorRegistry, MetricsScrape], loop: asyncio.AbstractEventLoop
) -> None:
    service, _, scrape = daemon
    granted = ("ratelimitd_permits_granted_total", (("bucket", "default"), ("provider", "m100")))
    assert _samples(_body(loop, scrape)[0])[granted] == 0
    _run(service, '{"op":"acquire","provider":"m100"}')
    assert _samples(_body(loop, scrape)[0])[granted] == 1


def test_openmetrics_when_asked(
    daemon: tuple[Service, CollectorRegistry, MetricsScrape], loop: asyncio.AbstractEventLoop
) -> None:
    service, _, scrape = daemon
    _run(service, '{"op":"acquire","provider":"one"}')
    text, content_type = _body(loop, scrape, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    samples = _samples(text, openmetrics=True)
    assert samples[("ratelimitd_acquires_total", (("outcome", "granted"), ("provider", "one")))] == 1
    assert samples[("ratelimitd_ready", ())] == 1
