"""The requests adapter against a real daemon and a local fake API (requests runs in a thread)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
import requests
from fake_llm import FakeLLM

from ratelimitd.client import AsyncClient, Client, PermitTimeout
from ratelimitd.requests import RateLimitAdapter

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from aiohttp.test_utils import TestServer
    from daemons import DaemonFactory, RunningDaemon

CONFIG = """
[server]
create_providers = false

[providers.keys]
rate = "1000/second"
burst = 100
buckets = ["a", "b"]
selection = "failover"

[providers.llm]
limits = [
  { unit = "requests", rate = "1000/second", burst = 100 },
  { unit = "tokens", rate = "1/minute", burst = 2000 },
]
"""
KEYS = {"keys": {"a": {"Authorization": "Bearer key-a"}, "b": {"Authorization": "Bearer key-b"}}}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: DaemonFactory) -> RunningDaemon:
    return module_daemon_factory(CONFIG)


@pytest.fixture
async def fake(aiohttp_server: Callable[..., Coroutine[Any, Any, TestServer]]) -> tuple[FakeLLM, str]:
    api = FakeLLM()
    server = await aiohttp_server(api.app())
    return api, str(server.make_url("")).rstrip("/")


async def post(daemon: RunningDaemon, url: str, body: dict[str, Any], **options: Any) -> tuple[int, Any]:
    def blocking() -> tuple[int, Any]:
        with Client(daemon.socket_path) as client, requests.Session() as session:
            session.mount("http://", RateLimitAdapter(client, **options))
            response = session.post(url, json=body)
            client.ping()  # after the report, sent without waiting, on this connection
            return response.status_code, response.json()

    return await asyncio.to_thread(blocking)


async def bucket(daemon: RunningDaemon, provider: str, name: str = "default") -> dict[str, Any]:
    async with AsyncClient(daemon.socket_path) as client:
        buckets = (await client.status(provider))[provider]["buckets"]
    state: dict[str, Any] = buckets[name]
    return state


async def test_a_request_is_acquired_and_reported_with_its_key(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str]
) -> None:
    api, base = fake
    before = await bucket(daemon, "keys", "a")
    status, _ = await post(
        daemon, f"{base}/v1/embeddings", {"input": "hi"}, provider="keys", bucket_headers=KEYS
    )
    assert status == 200
    after = await bucket(daemon, "keys", "a")
    assert (after["granted"], after["reports"]["2xx"]) == (
        before["granted"] + 1,
        before["reports"]["2xx"] + 1,
    )
    assert [seen.key for seen in api.seen] == ["key-a"]


async def test_a_429_fails_over_under_a_policy_and_goes_back_without_one(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str]
) -> None:
    api, base = fake
    api.fail_keys = {"key-a"}
    options: dict[str, Any] = {"provider": "keys", "bucket_headers": KEYS}
    status, _ = await post(daemon, f"{base}/v1/embeddings", {"input": "hi"}, policy="extract", **options)
    assert status == 200
    assert [seen.key for seen in api.seen] == ["key-a", "key-b"]
    async with AsyncClient(daemon.socket_path) as client:
        await client.reset("keys")
    status, answer = await post(daemon, f"{base}/v1/embeddings", {"input": "hi"}, **options)
    assert status == 429
    assert answer["error"]["code"] == "rate_limit_exceeded"
    async with AsyncClient(daemon.socket_path) as client:
        await client.reset("keys")


async def test_the_usage_of_a_json_answer_settles_the_estimate(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str]
) -> None:
    # 2,000 tokens refilled at 1 a minute; estimated ~910, used 100: ~1,900 left when settled.
    _, base = fake
    chat = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 900}
    status, answer = await post(daemon, f"{base}/v1/chat/completions", chat, provider="llm")
    assert status == 200
    assert answer["usage"]["total_tokens"] == 100
    async with AsyncClient(daemon.socket_path) as client:
        await client.acquire("llm", {"requests": 1, "tokens": 1850}, timeout=0)
        with pytest.raises(PermitTimeout):
            await client.acquire("llm", {"requests": 1, "tokens": 100}, timeout=0)


async def test_a_connection_error_is_reported_as_network_error(daemon: RunningDaemon) -> None:
    before = await bucket(daemon, "keys", "a")

    def blocking() -> None:
        with Client(daemon.socket_path) as client, requests.Session() as session:
            session.mount("http://", RateLimitAdapter(client, provider="keys", bucket_headers=KEYS))
            with pytest.raises(requests.ConnectionError):
                session.get("http://127.0.0.1:9/nothing-listens-here")

    await asyncio.to_thread(blocking)
    after = await bucket(daemon, "keys", "a")
    assert after["reports"]["network_error"] == before["reports"]["network_error"] + 1
    async with AsyncClient(daemon.socket_path) as client:
        await client.reset("keys")


def test_a_bucket_without_headers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"bucket_headers\['keys'\]\['b'\]: no headers"):
        RateLimitAdapter(None, bucket_headers={"keys": {"a": {"X": "1"}, "b": {}}})  # type: ignore[arg-type]
