"""Failover across API keys end to end: a real daemon, a local provider, the aiohttp middleware.

The provider is an aiohttp.web app on 127.0.0.1 with three keys, told apart by the
`Authorization` header: `k429` answers 429 with `Retry-After: 30`, `k401` answers 401,
`k200` answers 200 (on `/mixed`). `/ok` answers 200 for every key, `/fail` answers 500
for every key. The daemon runs with the LEARNING gate on (401 disables a key). Waits
between attempts go to a recorder instead of sleeping; assertions are on the waits the
policy chose, on what the provider saw and on what the daemon says.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from ratelimitd.aiohttp import RateLimitMiddleware
from ratelimitd.client import AllBucketsExhausted, AsyncClient, Client
from ratelimitd.client.retry_calls import urlopen
from ratelimitd.retry import DEFAULT_IDEMPOTENCY_HEADER, RetriesExhausted, RetryPolicy, backoff_bound, preset

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from daemons import DaemonFactory, RunningDaemon

KEYS = ("k429", "k401", "k200")
RETRY_AFTER = 30


def provider_toml(
    name: str, selection: str, buckets: tuple[str, ...] = KEYS, rate: str = "1000/second"
) -> str:
    names = ", ".join(f'"{b}"' for b in buckets)
    return (
        f'[providers.{name}]\nbuckets = [{names}]\nselection = "{selection}"\nrate = "{rate}"\nburst = 50\n'
    )


CONFIG = "\n".join(
    [
        "[features]\nlearning = true\n",
        provider_toml("failover", "failover"),
        provider_toml("round_robin", "round_robin"),
        provider_toml("most_headroom", "most_headroom"),
        # Slow refill, so the fill levels a test sets up still differ when a loaded machine gets to them.
        provider_toml("headroom", "most_headroom", rate="50/minute"),
        provider_toml("fair", "round_robin"),
        provider_toml("nok", "failover", ("k429", "k401")),
        provider_toml("flaky", "round_robin"),
        provider_toml("single", "failover", ("only",)),
        provider_toml("tiny", "failover", ("x", "y"), rate="1/second").replace("burst = 50", "burst = 1"),
        provider_toml("sync", "failover"),
    ]
)
HEADERS = {key: {"Authorization": f"Bearer {key}"} for key in KEYS}


@dataclass
class Seen:
    key: str
    path: str
    idempotency_key: str | None
    request_id: str | None


@dataclass
class FakeProvider:
    """What the local provider saw; `url(path)` addresses it."""

    base: str = ""
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def keys(self, path: str | None = None) -> list[str]:
        return [s.key for s in self.seen if path is None or s.path == path]


def provider_app(provider: FakeProvider) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        provider.seen.append(
            Seen(
                key, request.path, request.headers.get("Idempotency-Key"), request.headers.get("X-Request-Id")
            )
        )
        if request.path == "/fail":
            return web.json_response({"error": {"code": "server_error"}}, status=500)
        if request.path == "/ok" or key in ("k200", "only-ok"):
            return web.json_response({"key": key})
        if key in ("k429", "only"):
            return web.json_response(
                {"error": {"code": "rate_limit_exceeded"}},
                status=429,
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        return web.json_response({"error": {"code": "invalid_api_key"}}, status=401)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


@pytest.fixture
async def fake_provider() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider()
    runner = web.AppRunner(provider_app(provider))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    provider.base = f"http://127.0.0.1:{port}"
    yield provider
    await runner.cleanup()


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> RunningDaemon:
    return daemon_factory(CONFIG)


@pytest.fixture
async def client(daemon: RunningDaemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(daemon.socket_path) as client:
        yield client


class Waits:
    """Stands in for asyncio.sleep: records each wait, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.waits.append(delay)


def middleware(
    client: AsyncClient,
    provider: str,
    policy: RetryPolicy | str,
    waits: Waits,
    *,
    rng: Callable[[], float] = random.random,
    idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
) -> RateLimitMiddleware:
    headers = dict.fromkeys(
        ("failover", "round_robin", "most_headroom", "headroom", "fair", "flaky", "sync"), HEADERS
    )
    headers["nok"] = {k: HEADERS[k] for k in ("k429", "k401")}
    headers["single"] = {"only": {"Authorization": "Bearer only"}}
    return RateLimitMiddleware(
        client=client,
        provider=provider,
        policy=policy,
        bucket_headers=headers,
        sleep=waits,
        rng=rng,
        idempotency_header=idempotency_header,
    )


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        body = await response.json()
        return response.status, str(body.get("key"))


# -- failover order, per strategy -----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["failover", "round_robin", "most_headroom"])
async def test_failover_order_for_each_strategy(
    strategy: str, client: AsyncClient, daemon: RunningDaemon, fake_provider: FakeProvider
) -> None:
    waits = Waits()
    limits = middleware(client, strategy, "resolve", waits)
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        assert await get(session, fake_provider.url("/mixed")) == (200, "k200")
        # 429 then 401 then the good key, at once (resolve fails over immediately).
        assert fake_provider.keys() == ["k429", "k401", "k200"]
        assert waits.waits == [0.0, 0.0]
        # The daemon now knows: the 429 key is paused by its Retry-After, the 401 key is disabled.
        buckets = (await client.status(strategy))[strategy]["buckets"]
        assert {k: buckets[k]["state"] for k in KEYS} == {"k429": "paused", "k401": "disabled", "k200": "ok"}
        assert {k: buckets[k]["why"] for k in KEYS} == {"k429": "paused", "k401": "auth_failed", "k200": None}
        assert RETRY_AFTER - 2 < buckets["k429"]["available_in"] <= RETRY_AFTER + 0.1
        assert buckets["k429"]["paused_until"] is not None
        # So every later request goes straight to the good key, whatever the strategy.
        for _ in range(5):
            assert await get(session, fake_provider.url("/mixed")) == (200, "k200")
    assert fake_provider.keys()[3:] == ["k200"] * 5
    assert waits.waits == [0.0, 0.0]


async def test_round_robin_is_fair_over_many_calls(client: AsyncClient, fake_provider: FakeProvider) -> None:
    limits = middleware(client, "fair", "extract", Waits())
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        for _ in range(300):
            assert (await get(session, fake_provider.url("/ok")))[0] == 200
    assert fake_provider.keys()[:6] == ["k429", "k401", "k200", "k429", "k401", "k200"]
    assert Counter(fake_provider.keys()) == dict.fromkeys(KEYS, 100)
    buckets = (await client.status("fair"))["fair"]["buckets"]
    assert [buckets[k]["granted"] for k in KEYS] == [100, 100, 100]


async def test_most_headroom_prefers_the_fullest_key(
    client: AsyncClient, fake_provider: FakeProvider
) -> None:
    # Spend 10 permits of k429 and 5 of k401 (each pinned by excluding the others).
    for _ in range(10):
        assert (await client.acquire("headroom", exclude=("k401", "k200"))).bucket == "k429"
    for _ in range(5):
        assert (await client.acquire("headroom", exclude=("k429", "k200"))).bucket == "k401"
    limits = middleware(client, "headroom", "extract", Waits())
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        assert await get(session, fake_provider.url("/ok")) == (200, "k200")


# -- exhaustion -------------------------------------------------------------------------------------


async def test_exhaustion_names_every_reason_and_the_earliest_retry_after(
    client: AsyncClient, fake_provider: FakeProvider
) -> None:
    limits = middleware(client, "failover", "resolve", Waits())
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        assert await get(session, fake_provider.url("/mixed")) == (200, "k200")
    with pytest.raises(AllBucketsExhausted) as caught:
        await client.acquire("failover", timeout=0, exclude=("k200",))
    error = caught.value
    assert error.reasons == {"k429": "paused", "k401": "auth_failed", "k200": "excluded"}
    assert error.retry_after is not None
    assert RETRY_AFTER - 2 < error.retry_after <= RETRY_AFTER + 0.1  # the pause; the disable is 600 s


async def test_rate_limited_buckets_beyond_the_timeout(client: AsyncClient) -> None:
    assert {(await client.acquire("tiny", timeout=0)).bucket for _ in range(2)} == {"x", "y"}
    with pytest.raises(AllBucketsExhausted) as caught:
        await client.acquire("tiny", timeout=0.2)
    assert caught.value.reasons == {"x": "rate_limited", "y": "rate_limited"}
    assert caught.value.retry_after is not None
    assert 0.5 < caught.value.retry_after <= 1.0  # one permit back per second
    permit = await client.acquire("tiny", timeout=5)  # within the timeout: served by waiting
    assert permit.bucket in ("x", "y")


async def test_a_defer_policy_gives_up_with_every_attempt_listed(
    client: AsyncClient, fake_provider: FakeProvider
) -> None:
    waits = Waits()
    limits = middleware(client, "nok", preset("validate", max_attempts=5), waits)
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        with pytest.raises(RetriesExhausted) as caught:
            await session.get(fake_provider.url("/mixed"))
    error = caught.value
    assert [(a.bucket, a.status) for a in error.attempts] == [
        ("k429", 429),
        ("k401", 401),
        (None, "all_buckets_exhausted"),
    ]
    assert error.attempts[0].reason == "rate_limit_exceeded"  # read from the JSON error body
    assert error.attempts[2].reason == "k429 paused, k401 auth_failed"
    assert error.retry_after is not None
    assert RETRY_AFTER - 2 < error.retry_after <= RETRY_AFTER + 0.1
    assert "deferred" in error.why
    assert "#3 no bucket: all_buckets_exhausted (k429 paused, k401 auth_failed)" in str(error)
    assert fake_provider.keys() == ["k429", "k401"]
    assert len(waits.waits) == 2  # after #1 and #2; #3 asked for ~30 s > max_retry_after 5 s


async def test_a_single_key_waits_out_its_retry_after_through_the_daemon(
    client: AsyncClient, fake_provider: FakeProvider
) -> None:
    waits = Waits()
    policy = preset("extract", max_attempts=3, acquire_timeout=0.0, max_time=None)
    limits = middleware(client, "single", policy, waits, rng=lambda: 0.5)
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        with pytest.raises(RetriesExhausted) as caught:
            await session.get(fake_provider.url("/mixed"))
    attempts = caught.value.attempts
    assert [(a.bucket, a.status) for a in attempts] == [("only", 429), (None, "timeout"), (None, "timeout")]
    assert attempts[0].reason == "rate_limit_exceeded"
    # After the 429 the key is excluded, so the backoff (0.5 x 0.5 s); the daemon then refuses the
    # only key while the provider's Retry-After runs, and its retry_after is the next wait.
    assert waits.waits[0] == 0.25
    assert RETRY_AFTER - 2 < waits.waits[1] <= RETRY_AFTER + 0.1
    assert fake_provider.keys() == ["only"]


# -- idempotency, caps, jitter ----------------------------------------------------------------------


async def test_the_idempotency_key_is_kept_across_retries(
    client: AsyncClient, fake_provider: FakeProvider
) -> None:
    limits = middleware(client, "failover", "resolve", Waits())
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        await get(session, fake_provider.url("/mixed"))
        await get(session, fake_provider.url("/mixed"))
    first, second = fake_provider.seen[:3], fake_provider.seen[3]
    assert [s.key for s in first] == ["k429", "k401", "k200"]
    keys = {s.idempotency_key for s in first}
    assert len(keys) == 1
    (key,) = keys
    assert key is not None
    assert len(key) == 32
    assert second.idempotency_key not in (None, key)  # a new logical request, a new key
    # The header name is the caller's choice.
    renamed = middleware(
        client, "flaky", preset("extract", max_attempts=3), Waits(), idempotency_header="X-Request-Id"
    )
    async with aiohttp.ClientSession(middlewares=[renamed]) as session:
        with pytest.raises(RetriesExhausted):
            await session.get(fake_provider.url("/fail"))
    ids = [s.request_id for s in fake_provider.seen if s.path == "/fail"]
    assert len(ids) == 3
    assert len(set(ids)) == 1
    assert ids[0] is not None


async def test_attempts_are_capped_at_100(client: AsyncClient, fake_provider: FakeProvider) -> None:
    waits = Waits()
    policy = RetryPolicy(max_attempts=1000, max_time=None, base_wait=0.01, max_wait=0.05)
    limits = middleware(client, "flaky", policy, waits)
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        with pytest.raises(RetriesExhausted) as caught:
            await session.get(fake_provider.url("/fail"))
    assert len(caught.value.attempts) == 100
    assert caught.value.why == "max_attempts 100 reached"
    assert len(fake_provider.keys("/fail")) == 100
    assert len(waits.waits) == 99
    # Failover rotates through the keys: every key got a third of the attempts.
    assert Counter(fake_provider.keys("/fail")) == {"k429": 34, "k401": 33, "k200": 33}


async def test_jittered_waits_stay_within_their_bounds(
    client: AsyncClient, fake_provider: FakeProvider
) -> None:
    policy = preset("extract", max_attempts=8, max_time=None)
    draws = random.Random(20240607)
    expected_draws = random.Random(20240607)
    waits = Waits()
    limits = middleware(client, "flaky", policy, waits, rng=draws.random)
    async with aiohttp.ClientSession(middlewares=[limits]) as session:
        with pytest.raises(RetriesExhausted) as caught:
            await session.get(fake_provider.url("/fail"))
    bounds = [backoff_bound(policy, n) for n in range(1, 8)]
    assert bounds == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert len(waits.waits) == 7
    for wait, bound in zip(waits.waits, bounds, strict=True):
        assert 0.0 <= wait <= bound
    assert waits.waits == pytest.approx([expected_draws.random() * bound for bound in bounds])
    assert [a.wait for a in caught.value.attempts[:-1]] == waits.waits
    assert caught.value.attempts[-1].wait is None


# -- the synchronous helper -------------------------------------------------------------------------


async def test_urlopen_fails_over_like_the_middleware(
    daemon: RunningDaemon, fake_provider: FakeProvider
) -> None:
    slept: list[float] = []

    def fetch() -> tuple[int, bytes]:
        with Client(daemon.socket_path) as client:
            response = urlopen(
                client,
                "sync",
                fake_provider.url("/mixed"),
                policy="resolve",
                bucket_headers=HEADERS,
                sleep=slept.append,
            )
            with response:
                return response.status, response.read()

    status, body = await asyncio.to_thread(fetch)
    assert status == 200
    assert b"k200" in body
    assert fake_provider.keys() == ["k429", "k401", "k200"]
    assert slept == [0.0, 0.0]
    assert len({s.idempotency_key for s in fake_provider.seen}) == 1
