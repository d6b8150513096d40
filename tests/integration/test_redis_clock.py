"""Hosts whose clocks disagree still share one limit: Redis's `TIME` is the only clock shared.

Two services in this process, each with its own redis backend on one real redis-server; one
host's clock (monotonic and wall) runs 30 s ahead of the other's through the Clock seam.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import tomllib
from typing import TYPE_CHECKING

import pytest
from redis_servers import RedisServer

from ratelimitd.backends.redis_backend import RedisBackend
from ratelimitd.core.errors import RatelimitdError
from ratelimitd.core.protocol import ONE_REQUEST, AcquireRequest, ReportRequest
from ratelimitd.core.readiness import Readiness
from ratelimitd.daemon.config import parse_config
from ratelimitd.daemon.service import PendingAcquire, Service

if TYPE_CHECKING:
    from pathlib import Path

RATE = 200.0


class OffsetClock:
    """The system clocks shifted by `offset` seconds (a host whose clock is off)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset


async def _hammer(service: Service, stop: asyncio.Event) -> None:
    request = AcquireRequest(id=1, provider="api", cost=ONE_REQUEST, timeout=1.0, exclude=frozenset())
    while not stop.is_set():
        try:
            answer = service.acquire(request)
            if isinstance(answer, PendingAcquire):
                await answer.waiter.future
                service.finish(answer)  # counts the grant, as the server does
        except RatelimitdError:
            pass
        await asyncio.sleep(0)


async def test_a_host_clock_30_s_off_still_shares_one_limit(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    text = f"""
[backend]
kind = "redis"
url = "{server.url}"
key_prefix = "clock:"
[features]
learning = true
[providers.api]
rate = "{RATE:g}/s"
burst = 20
"""
    base = parse_config(tomllib.loads(text), {}, "test")
    loop = asyncio.get_running_loop()
    services: list[Service] = []
    backends: list[RedisBackend] = []
    stop = asyncio.Event()
    try:
        for host, offset in (("on-time", 0.0), ("ahead", 30.0)):
            config = dataclasses.replace(base, backend=dataclasses.replace(base.backend, host_id=host))
            service = Service(config, OffsetClock(offset), loop)
            backend = RedisBackend(config.backend, service, Readiness())
            await backend.start()
            service.set_backend(backend)
            services.append(service)
            backends.append(backend)
        assert all(b.up for b in backends)
        workers = [loop.create_task(_hammer(s, stop)) for s in services for _ in range(4)]
        await asyncio.sleep(0.5)
        buckets = [s.registry.providers["api"].buckets["default"] for s in services]
        before = [b.granted for b in buckets]
        start = time.monotonic()
        await asyncio.sleep(2.0)
        total = sum(b.granted for b in buckets) - sum(before)
        elapsed = time.monotonic() - start
        stop.set()
        await asyncio.gather(*workers)
        assert abs(total - RATE * elapsed) <= 0.05 * RATE * elapsed, (total, RATE * elapsed)
        # A Retry-After pause decided on one host lasts as long on the other, whatever its clock.
        services[0].report(
            ReportRequest(
                id=2, provider="api", bucket="default", status=429, permit=None, reason=None,
                retry_after=2.0, headers={},
            )
        )  # fmt: skip
        ahead = services[1]
        pause = None
        for _ in range(100):
            pause = buckets[1].learner.pause_until
            if pause is not None:
                break
            await asyncio.sleep(0.01)
        assert pause is not None
        assert pause - ahead.clock.monotonic() == pytest.approx(2.0, abs=0.3)
    finally:
        stop.set()
        for backend in backends:
            await backend.close()
        server.stop()
