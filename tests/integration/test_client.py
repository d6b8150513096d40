"""AsyncClient and Client against a real daemon process.

Providers created on demand get the `[defaults]` rate of one permit per minute
with a burst of one, so a second acquire on a fresh name always has to wait:
each test uses its own provider names and never waits for a rate.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest

from ratelimitd.client import (
    LOCAL_FALLBACK_BUCKET,
    AllBucketsExhausted,
    AsyncClient,
    BadRequest,
    Client,
    ConnectionLost,
    CostTooLarge,
    DaemonUnavailable,
    LineTooLong,
    PermitTimeout,
    ShuttingDown,
    TooManyProviders,
    UnknownOp,
    UnknownProvider,
)
from ratelimitd.core.errors import ErrorCode

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from daemons import DaemonFactory, RunningDaemon

MAX_PROVIDERS = 40
CONFIG = f"""
[server]
max_providers = {MAX_PROVIDERS}

[http]
enabled = false

[defaults]
rate = "1/minute"
burst = 1

[providers.fast]
rate = "1000000/second"
burst = 1000000

[providers.multi]
limits = [
  {{ unit = "requests", rate = "1000/second", burst = 1000 }},
  {{ unit = "tokens", rate = "10000/second", burst = 10000 }},
]
"""


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: DaemonFactory) -> RunningDaemon:
    return module_daemon_factory(CONFIG)


@pytest.fixture
def own_daemon(daemon_factory: DaemonFactory) -> RunningDaemon:
    """A daemon this test may stop, kill and restart."""
    return daemon_factory(CONFIG)


@pytest.fixture
async def client(daemon: RunningDaemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(daemon.socket_path) as connected:
        yield connected


def _bucket(status: dict[str, Any], provider: str) -> dict[str, Any]:
    bucket: dict[str, Any] = status[provider]["buckets"]["default"]
    return bucket


async def _sent(client: AsyncClient, task: asyncio.Task[Any]) -> None:
    """Make sure `task`'s request is on the wire: it writes before its first wait."""
    await asyncio.sleep(0)
    assert not task.done()
    await client.ping()  # answered after the daemon read the earlier line


# -- AsyncClient: the ops -----------------------------------------------------------------------


async def test_hello_and_ping(client: AsyncClient) -> None:
    hello = await client.hello()
    assert hello["server"] == "ratelimitd"
    assert hello["protocol"] == 1
    assert isinstance(hello["features"], dict)
    assert await client.ping() > 0


async def test_acquire_report_status_reset(client: AsyncClient) -> None:
    permit = await client.acquire("ops")
    assert (permit.provider, permit.bucket) == ("ops", "default")
    assert isinstance(permit.permit, int)
    assert permit.rate == pytest.approx(1 / 60)
    assert not permit.local

    first = await client.report_for(permit, 429, headers={"Retry-After": "1"})
    assert (first.provider, first.bucket, first.streak) == ("ops", "default", 1)
    second = await client.report("ops", 429, permit=permit.permit, reason="rate_limit_exceeded")
    assert second.streak == 2

    bucket = _bucket(await client.status("ops"), "ops")
    assert bucket["granted"] == 1
    assert bucket["streak"] == 2
    assert bucket["reports"]["429"] == 2
    assert "ops" in await client.status()

    reset = await client.reset("ops")
    assert reset == {"provider": "ops", "buckets": ["default"]}
    assert _bucket(await client.status("ops"), "ops")["streak"] == 0
    assert (await client.report("ops", 200)).streak == 0
    assert (await client.reset("ops", bucket="default"))["buckets"] == ["default"]


async def test_permit_context_manager_with_a_multi_unit_cost(client: AsyncClient) -> None:
    before = _bucket(await client.status("multi"), "multi")["granted"]
    async with client.permit("multi", cost={"requests": 1, "tokens": 1200}) as permit:
        assert permit.provider == "multi"
        assert permit.rate == 1000.0
    assert _bucket(await client.status("multi"), "multi")["granted"] == before + 1


async def test_many_tasks_share_one_pipelined_connection(client: AsyncClient) -> None:
    permits = await asyncio.gather(*(client.acquire("fast") for _ in range(500)))
    ids = {permit.permit for permit in permits}
    assert len(ids) == 500
    assert None not in ids
    assert client.connections_made == 1


async def test_a_waiting_acquire_does_not_hold_back_other_requests(client: AsyncClient) -> None:
    await client.acquire("hold")  # takes the only permit for a minute
    waiting = asyncio.create_task(client.acquire("hold", timeout=600))
    await _sent(client, waiting)
    # Requests sent after it are answered while it waits: out-of-order responses.
    for _ in range(20):
        assert await client.ping() > 0
        assert (await client.acquire("fast")).provider == "fast"
    assert not waiting.done()
    assert _bucket(await client.status("hold"), "hold")["waiters"] == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_timeout_raises_permit_timeout_with_retry_after(client: AsyncClient) -> None:
    await client.acquire("tmo")
    with pytest.raises(PermitTimeout) as now_or_never:
        await client.acquire("tmo", timeout=0)
    assert now_or_never.value.code is ErrorCode.TIMEOUT
    assert now_or_never.value.retry_after is not None
    assert 30 < now_or_never.value.retry_after <= 60
    with pytest.raises(PermitTimeout) as short:
        await client.acquire("tmo", timeout=0.2)  # can never be served in time
    assert short.value.retry_after is not None
    assert short.value.retry_after > 0.2
    assert _bucket(await client.status("tmo"), "tmo")["timeouts"] == 2


async def test_default_timeout_is_sent_with_acquires(daemon: RunningDaemon) -> None:
    async with AsyncClient(daemon.socket_path, default_timeout=0) as client:
        await client.acquire("dflt")
        with pytest.raises(PermitTimeout):
            await client.acquire("dflt")


async def test_error_codes_become_typed_exceptions(client: AsyncClient) -> None:
    with pytest.raises(CostTooLarge, match="tokens"):
        await client.acquire("multi", cost={"tokens": 20000})
    with pytest.raises(BadRequest, match="provider"):
        await client.acquire("not a valid name!")
    with pytest.raises(BadRequest, match="status"):
        await client.report("fast", 99)
    with pytest.raises(UnknownProvider):
        await client.status("never-used")
    with pytest.raises(UnknownProvider):
        await client.reset("never-used")
    with pytest.raises(UnknownOp, match="frobnicate"):
        await client.request({"op": "frobnicate"})
    # Every error above left the connection usable.
    assert await client.ping() > 0
    assert client.connections_made == 1


async def test_line_too_long_closes_then_the_client_reconnects(client: AsyncClient) -> None:
    huge = {f"x-header-{i}": "v" * 1000 for i in range(100)}  # ~100 kB > max_line_bytes
    with pytest.raises(LineTooLong):
        await client.report("fast", 200, headers=huge)
    assert await client.ping() > 0
    assert client.connections_made == 2


async def test_too_many_providers(own_daemon: RunningDaemon) -> None:
    async with AsyncClient(own_daemon.socket_path) as client:
        configured = len(await client.status())
        for i in range(MAX_PROVIDERS - configured):
            await client.acquire(f"many-{i}")
        with pytest.raises(TooManyProviders, match="max_providers"):
            await client.acquire("one-too-many")
        assert len(await client.status()) == MAX_PROVIDERS


FAILOVER_CONFIG = """
[http]
enabled = false

[features]
learning = true

[providers.keys]
rate = "10/second"
buckets = ["k1", "k2"]
"""


async def test_failover_with_exclude_and_all_buckets_exhausted(daemon_factory: DaemonFactory) -> None:
    process = daemon_factory(FAILOVER_CONFIG)
    async with AsyncClient(process.socket_path) as client:
        first = await client.acquire("keys")
        assert first.bucket == "k1"
        assert (await client.report_for(first, 401)).action == "disabled"
        second = await client.acquire("keys")
        assert second.bucket == "k2"
        with pytest.raises(AllBucketsExhausted) as caught:
            await client.acquire("keys", exclude=[second.bucket], timeout=0)
        assert caught.value.code is ErrorCode.ALL_BUCKETS_EXHAUSTED
        assert set(caught.value.reasons) == {"k1", "k2"}
        assert caught.value.reasons["k1"] == "auth_failed"


# -- AsyncClient: daemon restarts ---------------------------------------------------------------


async def test_reconnects_after_the_daemon_restarts(own_daemon: RunningDaemon) -> None:
    async with AsyncClient(own_daemon.socket_path) as client:
        assert (await client.acquire("fast")).permit == 1
        assert await asyncio.to_thread(own_daemon.stop) == 0
        await asyncio.to_thread(own_daemon.restart)
        # A new daemon: permit ids start again, over a second connection.
        assert (await client.acquire("fast")).permit == 1
        assert client.connections_made == 2


async def test_killed_daemon_fails_in_flight_requests_with_connection_lost(
    own_daemon: RunningDaemon,
) -> None:
    async with AsyncClient(own_daemon.socket_path) as client:
        await client.acquire("lost")
        waiting = asyncio.create_task(client.acquire("lost", timeout=600))
        await _sent(client, waiting)
        await asyncio.to_thread(own_daemon.kill)
        with pytest.raises(ConnectionLost):
            await waiting
        with pytest.raises(DaemonUnavailable):
            await client.ping()  # nothing listens on the stale socket file
        await asyncio.to_thread(own_daemon.restart)
        assert await client.ping() > 0
        assert client.connections_made == 2


async def test_waiting_acquire_gets_shutting_down_on_sigterm(own_daemon: RunningDaemon) -> None:
    async with AsyncClient(own_daemon.socket_path) as client:
        await client.acquire("bye")
        waiting = asyncio.create_task(client.acquire("bye", timeout=600))
        await _sent(client, waiting)
        assert await asyncio.to_thread(own_daemon.stop) == 0
        with pytest.raises(ShuttingDown):
            await waiting


# -- AsyncClient: no daemon ---------------------------------------------------------------------


async def test_fallback_raise_without_a_daemon(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    with pytest.raises(DaemonUnavailable, match=r"none\.sock"):
        async with AsyncClient(missing):
            pass
    client = AsyncClient(missing, connect_attempts=2)
    with pytest.raises(DaemonUnavailable):
        await client.acquire("api")
    with pytest.raises(DaemonUnavailable):
        await client.report("api", 200)
    assert client.connections_made == 0


async def test_fallback_local_limits_at_the_fallback_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ratelimitd.client")
    async with AsyncClient(tmp_path / "none.sock", fallback="local", fallback_rate=2) as client:
        permits = [await client.acquire("api", timeout=0) for _ in range(2)]
        assert all(p.bucket == LOCAL_FALLBACK_BUCKET and p.local for p in permits)
        assert all(p.permit is None and p.rate == 2.0 for p in permits)
        with pytest.raises(PermitTimeout) as caught:
            await client.acquire("api", timeout=0)
        assert caught.value.retry_after == pytest.approx(0.5)
        limiter = client.local_limiter("api")
        assert limiter is not None
        assert limiter.max_rate == 2.0
        assert not limiter.has_capacity(1)
        # Each provider has its own local limiter.
        assert (await client.acquire("other", timeout=0)).local
        assert client.local_limiter("other") is not limiter
        # Reports have nowhere to go: dropped, logged at debug.
        assert (await client.report_for(permits[0], 200)).action == "dropped"
        assert (await client.report("api", 429)).action == "dropped"
        with pytest.raises(DaemonUnavailable):
            await client.status()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "limiting locally" in warnings[0].getMessage()
    assert sum("dropped" in r.getMessage() for r in caplog.records) == 2


async def test_fallback_local_goes_back_to_the_daemon(
    daemon_factory: DaemonFactory, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ratelimitd.client")
    socket_path = short_dir / "later.sock"  # nothing serves it yet
    async with AsyncClient(socket_path, fallback="local", fallback_probe_interval=0) as client:
        assert (await client.acquire("fast")).local
        await asyncio.to_thread(daemon_factory, CONFIG, socket_path=socket_path)
        permit = await client.acquire("fast")
        assert not permit.local
        assert permit.bucket == "default"
    assert any("reachable again" in r.getMessage() for r in caplog.records)


# -- Client (blocking) --------------------------------------------------------------------------


def test_sync_client_ops(daemon: RunningDaemon) -> None:
    with Client(daemon.socket_path) as client:
        assert client.hello()["protocol"] == 1
        assert client.ping() > 0
        with client.permit("sync-ops") as permit:
            assert (permit.provider, permit.bucket) == ("sync-ops", "default")
        assert client.report_for(permit, 429).streak == 1
        assert client.report("sync-ops", "network_error").streak == 1
        bucket = _bucket(client.status("sync-ops"), "sync-ops")
        assert bucket["granted"] == 1
        assert bucket["reports"]["429"] == 1
        assert bucket["reports"]["network_error"] == 1
        assert client.reset("sync-ops")["buckets"] == ["default"]
        assert _bucket(client.status("sync-ops"), "sync-ops")["streak"] == 0
        with pytest.raises(PermitTimeout) as caught:
            client.acquire("sync-ops", timeout=0)
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 0
        with pytest.raises(CostTooLarge):
            client.acquire("multi", cost={"requests": 1, "tokens": 50000})
        with pytest.raises(UnknownProvider):
            client.status("never-used")
        assert client.connections_made == 1


def test_sync_client_is_thread_safe(daemon: RunningDaemon) -> None:
    permits: list[int | None] = []
    errors: list[BaseException] = []
    with Client(daemon.socket_path) as client:

        def work() -> None:
            try:
                permits.extend(client.acquire("fast").permit for _ in range(50))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(set(permits)) == 400
        assert client.connections_made == 1


def test_sync_client_reconnects_after_restart(own_daemon: RunningDaemon) -> None:
    with Client(own_daemon.socket_path) as client:
        assert client.acquire("fast").permit == 1
        assert own_daemon.stop() == 0
        own_daemon.restart()
        assert client.acquire("fast").permit == 1
        assert client.connections_made == 2


def test_sync_client_fallbacks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimitd.client.sync")
    missing = tmp_path / "none.sock"
    with pytest.raises(DaemonUnavailable):
        Client(missing).__enter__()
    with Client(missing, fallback="local", fallback_rate=3) as client:
        permits = [client.acquire("api", timeout=0) for _ in range(3)]
        assert all(p.local and p.permit is None for p in permits)
        with pytest.raises(PermitTimeout):
            client.acquire("api", timeout=0)
        bucket = client.local_limiter("api")
        assert bucket is not None
        assert bucket.rate == 3.0
        assert bucket.level() > 2.0
        assert client.report_for(permits[0], 200).action == "dropped"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
