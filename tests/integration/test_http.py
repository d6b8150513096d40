"""The HTTP endpoints on a real aiohttp server, over a real Service and metrics registry."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ratelimitd import __version__
from ratelimitd.core.errors import RatelimitdError
from ratelimitd.core.protocol import StatusRequest, parse_request
from ratelimitd.daemon.clock import SystemClock
from ratelimitd.daemon.config import Config, HttpConfig
from ratelimitd.daemon.service import Service
from ratelimitd.ops.http import DEFAULT_PORT, HttpServer, Readiness, compresses, is_loopback
from ratelimitd.ops.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


LOOPBACK = HttpConfig(host="127.0.0.1", port=0)


def run(service: Service, line: bytes) -> object:
    """One request through the service, as the socket server would run it."""
    try:
        return service.handle(parse_request(line, max_timeout=60.0))
    except RatelimitdError as exc:
        service.metrics.on_protocol_error(exc.code)
        return exc


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    service = Service(Config(), SystemClock(), asyncio.get_running_loop())
    yield service
    service.shut_down()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_default_address_is_loopback() -> None:
    assert HttpConfig().host == "127.0.0.1"
    assert HttpConfig().port == DEFAULT_PORT
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.10")
    assert not is_loopback("example.org")


def test_readiness_is_the_and_of_components() -> None:
    readiness = Readiness("persist", socket="not bound yet", config="loading", state=None)
    assert readiness.reasons() == {"persist": "not started", "socket": "not bound yet", "config": "loading"}
    readiness.set("persist", True)
    readiness.set("config", True)
    assert readiness.reasons() == {"socket": "not bound yet"}
    readiness["socket"] = None
    assert readiness.reasons() == {}
    assert readiness.ready is True
    readiness.set("socket", False, "stopping")
    assert readiness.reasons() == {"socket": "stopping"}
    readiness["state"] = "corrupt file"
    assert readiness.reasons() == {"socket": "stopping", "state": "corrupt file"}
    assert not readiness.ready


async def test_endpoints(service: Service, client: aiohttp.ClientSession) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, version=__version__, max_providers=10)
    service.metrics = metrics
    readiness = Readiness(socket="not started", config="not loaded")
    metrics.attach(service, wall=SystemClock().wall, ready=lambda: readiness.ready)
    run(service, b'{"op":"acquire","provider":"openai"}')
    run(service, b'{"op":"report","provider":"openai","status":429}')
    run(service, b'{"op":"report","provider":"openai","status":200}')
    run(service, b'{"op":"nope"}')
    run(service, b'{"op":"acquire","provider":"openai","cost":1000}')  # cost_too_large

    async with HttpServer(LOOPBACK, registry=registry, readiness=readiness, status=service) as server:
        assert server.port > 0
        base = f"http://127.0.0.1:{server.port}"

        async with client.get(f"{base}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"ok": True}

        readiness.set("config", True)
        async with client.get(f"{base}/readyz") as response:
            assert response.status == 503
            assert await response.json() == {"ready": False, "reasons": {"socket": "not started"}}
        readiness.set("socket", True)
        async with client.get(f"{base}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"ready": True}

        async with client.get(f"{base}/v1/status") as response:
            assert response.status == 200
            body = await response.json()
        expected = service.status(StatusRequest(id=None, provider=None))
        del expected["id"]
        # The share of the burst available refills between the two reads (a real clock).
        fills = [b["providers"]["openai"]["buckets"]["default"].pop("fill") for b in (body, expected)]
        assert 0 < fills[0] <= fills[1] <= 1
        assert body == expected
        assert body["providers"]["openai"]["buckets"]["default"]["reports"]["429"] == 1
        async with client.get(f"{base}/v1/status", params={"provider": "openai"}) as response:
            assert set((await response.json())["providers"]) == {"openai"}
        async with client.get(f"{base}/v1/status", params={"provider": "missing"}) as response:
            assert response.status == 404
            assert (await response.json())["error"] == "unknown_provider"

        async with client.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        openai = (("bucket", "default"), ("provider", "openai"))
        assert samples[("ratelimitd_permits_granted_total", openai)] == 1
        assert samples[("ratelimitd_reports_total", (*openai, ("status_class", "429")))] == 1
        assert samples[("ratelimitd_acquires_total", (("outcome", "granted"), ("provider", "openai")))] == 1
        assert samples[("ratelimitd_acquires_total", (("outcome", "error"), ("provider", "openai")))] == 1
        assert samples[("ratelimitd_protocol_errors_total", (("code", "cost_too_large"),))] == 1
        assert samples[("ratelimitd_protocol_errors_total", (("code", "unknown_op"),))] == 1
        assert samples[("ratelimitd_ready", ())] == 1
        (build,) = [labels for name, labels in samples if name == "ratelimitd_build_info"]
        assert ("version", __version__) in build
        assert samples[("ratelimitd_build_info", build)] == 1
        assert ("process_resident_memory_bytes", ()) in samples

        # OpenMetrics when the scraper asks for it, as Prometheus does.
        headers = {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"}
        async with client.get(f"{base}/metrics", headers=headers) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            text = await response.text()
        assert text.endswith("# EOF\n")
        assert "# TYPE ratelimitd_acquires counter\n" in text
        assert "# TYPE ratelimitd_acquire_wait_seconds histogram\n" in text
        assert 'ratelimitd_acquires_total{outcome="granted",provider="openai"} 1.0\n' in text

    async with aiohttp.ClientSession() as other:
        with pytest.raises(aiohttp.ClientConnectionError):
            await other.get(f"{base}/healthz")


async def test_metrics_can_be_left_out(service: Service, client: aiohttp.ClientSession) -> None:
    config = HttpConfig(host="127.0.0.1", port=0, metrics=False)
    registry = CollectorRegistry()
    async with HttpServer(config, registry=registry, readiness=Readiness(), status=service) as server:
        async with client.get(f"http://127.0.0.1:{server.port}/metrics") as response:
            assert response.status == 404
        async with client.get(f"http://127.0.0.1:{server.port}/readyz") as response:
            assert response.status == 200


async def test_non_loopback_address_is_logged(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    config = HttpConfig(host="0.0.0.0", port=0)
    with caplog.at_level(logging.WARNING, logger="ratelimitd.ops.http"):
        async with HttpServer(config, registry=None, readiness=Readiness(), status=service):
            pass
    assert any("not loopback" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_port_in_use_is_an_error(service: Service) -> None:
    async with HttpServer(LOOPBACK, registry=None, readiness=Readiness(), status=service) as first:
        taken = HttpConfig(host="127.0.0.1", port=first.port)
        with pytest.raises(OSError, match="address already in use"):
            async with HttpServer(taken, registry=None, readiness=Readiness(), status=service):
                pass


async def test_a_loopback_scrape_is_not_gzipped(service: Service, client: aiohttp.ClientSession) -> None:
    # Prometheus always asks for gzip; over loopback it would only cost the daemon's CPU.
    registry = CollectorRegistry()
    metrics = Metrics(registry, version=__version__, max_providers=10)
    metrics.attach(service, wall=SystemClock().wall, ready=lambda: True)
    service.metrics = metrics
    run(service, b'{"op":"acquire","provider":"openai"}')
    async with HttpServer(LOOPBACK, registry=registry, readiness=Readiness(), status=service) as server:
        headers = {"Accept-Encoding": "gzip, deflate"}
        async with client.get(f"http://127.0.0.1:{server.port}/metrics", headers=headers) as response:
            assert response.status == 200
            assert "Content-Encoding" not in response.headers
            assert "ratelimitd_acquires_total" in await response.text()


@pytest.mark.parametrize(("peer", "gzipped"), [("127.0.0.1", False), ("::1", False), ("192.0.2.7", True)])
def test_only_a_scraper_on_another_host_gets_gzip(peer: str, gzipped: bool) -> None:
    class Transport:
        """What aiohttp reads the peer's address from (a remote peer cannot connect in a test)."""

        def get_extra_info(self, name: str, default: object = None) -> object:
            return (peer, 9090) if name == "peername" else default

    request = make_mocked_request("GET", "/metrics", transport=Transport())
    assert request.remote == peer
    assert compresses(request) is gzipped
