"""The official OpenAI and Anthropic SDKs through the httpx2 transports, against a real daemon
and a local fake of each API (real rate-limit headers, 429s with Retry-After).

Each test runs for both SDKs, blocking and asyncio. The blocking SDK clients run in a
thread while the fake API answers on the test's loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
import openai
import pytest
from fake_llm import FakeLLM

from ratelimitd.client import AsyncClient, Client, PermitTimeout
from ratelimitd.httpx2 import AsyncRateLimitTransport, RateLimitTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from aiohttp.test_utils import TestServer
    from daemons import DaemonFactory, RunningDaemon

SDKS = ("openai", "anthropic")
MODES = [(sdk, mode) for sdk in SDKS for mode in ("sync", "async")]
# OpenAI counts one `tokens` limit, Anthropic input and output tokens apart.
TOKENS = {
    "openai": '{{ unit = "tokens", rate = "{rate}", burst = {burst} }}',
    "anthropic": '{{ unit = "input_tokens", rate = "{rate}", burst = {burst} }}, '
    '{{ unit = "output_tokens", rate = "{rate}", burst = {burst} }}',
}
PROVIDERS = """
[providers.{name}]
limits = [{{ unit = "requests", rate = "1000/second", burst = 100 }}, {fast}]

[providers.{name}-stream]
limits = [{{ unit = "requests", rate = "1000/second", burst = 100 }}, {slow}]

[providers.{name}-keys]
rate = "1000/second"
burst = 100
buckets = ["k1", "k2"]
selection = "failover"
"""
# Both SDKs send their key as `Authorization: Bearer ...`: each bucket sets its own.
KEYS = {"k1": {"Authorization": "Bearer key-1"}, "k2": {"Authorization": "Bearer key-2"}}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: DaemonFactory) -> RunningDaemon:
    config = "[server]\ncreate_providers = false\n" + "".join(
        PROVIDERS.format(
            name=f"{sdk}-{mode}",
            fast=TOKENS[sdk].format(rate="600000/minute", burst=20000),
            slow=TOKENS[sdk].format(rate="1/minute", burst=2000),
        )
        for sdk, mode in MODES
    )
    return module_daemon_factory(config)


@pytest.fixture
async def fake(aiohttp_server: Callable[..., Coroutine[Any, Any, TestServer]]) -> tuple[FakeLLM, str]:
    api = FakeLLM()
    server = await aiohttp_server(api.app())
    return api, str(server.make_url("")).rstrip("/")


async def call_sdk(
    daemon: RunningDaemon,
    sdk: str,
    mode: str,
    base: str,
    *,
    max_retries: int,
    stream: bool = False,
    **transport: Any,
) -> Any:
    """One chat call (OpenAI chat completions, Anthropic messages) through the transport."""
    kwargs: dict[str, Any] = {"model": "test-model", "max_tokens": 100}
    if sdk == "openai":
        kwargs["messages"] = [{"role": "user", "content": "Say hello."}]
        if stream:
            kwargs |= {"stream": True, "stream_options": {"include_usage": True}}
    else:
        kwargs["messages"] = [{"role": "user", "content": "Say hello."}]
        kwargs["stream"] = stream
    if mode == "sync":

        def blocking() -> Any:
            with Client(daemon.socket_path) as client:
                http = httpx2.Client(transport=RateLimitTransport(client, **transport))
                if sdk == "openai":
                    api: Any = openai.OpenAI(
                        api_key="key-0", base_url=f"{base}/v1", http_client=http, max_retries=max_retries
                    )
                    create = api.chat.completions.create
                else:
                    api = anthropic.Anthropic(
                        api_key="key-0", base_url=base, http_client=http, max_retries=max_retries
                    )
                    create = api.messages.create
                try:
                    with api:
                        answer = create(**kwargs)
                        return list(answer) if stream else answer
                finally:
                    client.ping()  # after the reports, sent without waiting, on this connection

        return await asyncio.to_thread(blocking)
    async with AsyncClient(daemon.socket_path) as client:
        http = httpx2.AsyncClient(transport=AsyncRateLimitTransport(client, **transport))
        if sdk == "openai":
            aapi: Any = openai.AsyncOpenAI(
                api_key="key-0", base_url=f"{base}/v1", http_client=http, max_retries=max_retries
            )
            acreate = aapi.chat.completions.create
        else:
            aapi = anthropic.AsyncAnthropic(
                api_key="key-0", base_url=base, http_client=http, max_retries=max_retries
            )
            acreate = aapi.messages.create
        try:
            async with aapi:
                answer = await acreate(**kwargs)
                return [event async for event in answer] if stream else answer
        finally:
            await client.ping()  # after the reports, sent without waiting, on this connection


async def bucket(daemon: RunningDaemon, provider: str, name: str = "default") -> dict[str, Any]:
    async with AsyncClient(daemon.socket_path) as client:
        buckets = (await client.status(provider))[provider]["buckets"]
    state: dict[str, Any] = buckets[name]
    return state


@pytest.mark.parametrize(("sdk", "mode"), MODES)
async def test_every_attempt_of_the_sdk_is_acquired_and_reported(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], sdk: str, mode: str
) -> None:
    api, base = fake
    api.plan = [429, 429]  # then 200: the SDK's own retries get there
    provider = f"{sdk}-{mode}"
    before = await bucket(daemon, provider)
    await call_sdk(daemon, sdk, mode, base, max_retries=2, provider=provider)
    after = await bucket(daemon, provider)
    assert len(api.seen) == 3
    assert after["granted"] - before["granted"] == 3
    assert after["reports"]["429"] - before["reports"]["429"] == 2
    assert after["reports"]["2xx"] - before["reports"]["2xx"] == 1


@pytest.mark.parametrize(("sdk", "mode"), MODES)
async def test_failover_moves_to_the_next_key(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], sdk: str, mode: str
) -> None:
    api, base = fake
    api.fail_keys = {"key-1"}
    provider = f"{sdk}-{mode}-keys"
    await call_sdk(
        daemon,
        sdk,
        mode,
        base,
        max_retries=0,
        provider=provider,
        policy="extract",
        bucket_headers={provider: KEYS},
    )
    assert [seen.key for seen in api.seen] == ["key-1", "key-2"]
    async with AsyncClient(daemon.socket_path) as client:
        await client.reset(provider)


@pytest.mark.parametrize(("sdk", "mode"), MODES)
async def test_a_429_storm_slows_the_whole_host(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], sdk: str, mode: str
) -> None:
    api, base = fake
    api.retry_after_ms = 200
    api.plan = [429] * 3
    provider = f"{sdk}-{mode}"
    error = openai.RateLimitError if sdk == "openai" else anthropic.RateLimitError
    with pytest.raises(error):
        await call_sdk(daemon, sdk, mode, base, max_retries=2, provider=provider)
    # Another process of the host, which never saw a 429, waits for the pause too.
    async with AsyncClient(daemon.socket_path) as other:
        permit = await other.acquire(provider, timeout=30)
        assert permit.waited > 0
        await other.reset(provider)
    assert len(api.seen) == 3


@pytest.mark.parametrize(("sdk", "mode"), MODES)
async def test_a_stream_settles_its_tokens_from_the_final_event(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], sdk: str, mode: str
) -> None:
    # 2,000 tokens that refill at 1 a minute; the call is estimated at ~110 (100 of output)
    # and uses 30 (20 of output): the difference comes back only if the stream was settled.
    api, base = fake
    api.usage_input, api.usage_output = 10, 20
    provider = f"{sdk}-{mode}-stream"
    events = await call_sdk(daemon, sdk, mode, base, max_retries=0, stream=True, provider=provider)
    assert events
    unit, left = ("tokens", 1970) if sdk == "openai" else ("output_tokens", 1980)
    async with AsyncClient(daemon.socket_path) as client:
        await client.acquire(provider, {"requests": 1, unit: left - 10}, timeout=0)
        with pytest.raises(PermitTimeout):
            await client.acquire(provider, {"requests": 1, unit: 60}, timeout=0)
