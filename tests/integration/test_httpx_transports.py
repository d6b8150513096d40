"""The httpx and httpx2 transports, sync and async, against a real daemon and a local fake API.

Each test runs for both libraries and both transports. Blocking clients run in a thread
while the fake API (an aiohttp test server) answers on the test's loop.
"""

from __future__ import annotations

import asyncio
import types
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import pytest
from fake_llm import FakeLLM

from ratelimitd.client import AsyncClient, Client, PermitTimeout
from ratelimitd.integrations import httpx as rl_httpx
from ratelimitd.integrations import httpx2 as rl_httpx2
from ratelimitd.integrations.bucket_headers import MissingBucketHeaders

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from aiohttp.test_utils import TestServer
    from daemons import DaemonFactory, RunningDaemon

CONFIG = """
[server]
create_providers = false

[providers.api]
rate = "1000/second"
burst = 100

[providers.requests-only]
rate = "1000/second"
burst = 100

[providers.keys]
rate = "1000/second"
burst = 100
buckets = ["a", "b"]
selection = "failover"
"""
LLM = """
[providers.llm-{flavour}-{mode}]
limits = [
  {{ unit = "requests", rate = "1000/second", burst = 100 }},
  {{ unit = "tokens", rate = "1/minute", burst = 2000 }},
]
"""
KEYS = {"keys": {"a": {"Authorization": "Bearer key-a"}, "b": {"Authorization": "Bearer key-b"}}}
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 900}

FLAVOURS = {"httpx": (httpx, rl_httpx), "httpx2": (httpx2, rl_httpx2)}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: DaemonFactory) -> RunningDaemon:
    llm = (LLM.format(flavour=flavour, mode=mode) for flavour in FLAVOURS for mode in ("sync", "async"))
    return module_daemon_factory(CONFIG + "".join(llm))


@pytest.fixture
async def fake(aiohttp_server: Callable[..., Coroutine[Any, Any, TestServer]]) -> tuple[FakeLLM, str]:
    api = FakeLLM()
    server = await aiohttp_server(api.app())
    return api, str(server.make_url("")).rstrip("/")


async def post(
    daemon: RunningDaemon, flavour: str, mode: str, url: str, body: dict[str, Any], **options: Any
) -> tuple[int, dict[str, Any]]:
    """POST `body` to `url` through the flavour's transport; the status and the JSON answer."""
    lib, transports = FLAVOURS[flavour]
    if mode == "sync":

        def blocking() -> tuple[int, dict[str, Any]]:
            with Client(daemon.socket_path) as client:
                transport = transports.RateLimitTransport(client, **options)
                with lib.Client(transport=transport) as http:
                    response = http.post(url, json=body)
                    answer: dict[str, Any] = response.json()
                client.ping()  # after the report, sent without waiting, on this connection
                return response.status_code, answer

        return await asyncio.to_thread(blocking)
    async with AsyncClient(daemon.socket_path) as client:
        transport = transports.AsyncRateLimitTransport(client, **options)
        async with lib.AsyncClient(transport=transport) as http:
            response = await http.post(url, json=body)
            answer: dict[str, Any] = response.json()
        await client.ping()  # after the report, sent without waiting, on this connection
        return response.status_code, answer


async def bucket(daemon: RunningDaemon, provider: str, name: str = "default") -> dict[str, Any]:
    async with AsyncClient(daemon.socket_path) as client:
        buckets = (await client.status(provider))[provider]["buckets"]
    state: dict[str, Any] = buckets[name]
    return state


async def reset(daemon: RunningDaemon, provider: str) -> None:
    async with AsyncClient(daemon.socket_path) as client:
        await client.reset(provider)


MODES = [(flavour, mode) for flavour in FLAVOURS for mode in ("sync", "async")]


@pytest.mark.parametrize(("flavour", "mode"), MODES)
async def test_each_request_is_acquired_and_reported_with_its_key(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], flavour: str, mode: str
) -> None:
    api, base = fake
    before = await bucket(daemon, "keys", "a")
    status, answer = await post(
        daemon, flavour, mode, f"{base}/v1/embeddings", {"input": "hi"}, provider="keys", bucket_headers=KEYS
    )
    assert status == 200
    assert answer["usage"]["total_tokens"] == api.usage_input
    after = await bucket(daemon, "keys", "a")
    assert after["granted"] == before["granted"] + 1
    assert after["reports"]["2xx"] == before["reports"]["2xx"] + 1
    (seen,) = api.seen
    assert seen.key == "key-a"
    assert seen.idempotency_key


@pytest.mark.parametrize(("flavour", "mode"), MODES)
async def test_a_host_not_mapped_passes_through(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], flavour: str, mode: str
) -> None:
    api, base = fake
    before = await bucket(daemon, "api")
    status, _ = await post(
        daemon, flavour, mode, f"{base}/v1/embeddings", {"input": "hi"}, hosts={"elsewhere.test": "api"}
    )
    assert status == 200
    assert len(api.seen) == 1
    assert (await bucket(daemon, "api"))["granted"] == before["granted"]


@pytest.mark.parametrize(("flavour", "mode"), MODES)
async def test_a_429_fails_over_to_the_next_key_under_a_policy(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], flavour: str, mode: str
) -> None:
    api, base = fake
    api.fail_keys = {"key-a"}
    status, _ = await post(
        daemon,
        flavour,
        mode,
        f"{base}/v1/embeddings",
        {"input": "hi"},
        provider="keys",
        bucket_headers=KEYS,
        policy="extract",
    )
    assert status == 200
    assert [seen.key for seen in api.seen] == ["key-a", "key-b"]
    assert api.seen[0].idempotency_key == api.seen[1].idempotency_key
    await reset(daemon, "keys")  # the 429 paused key a for the other tests


@pytest.mark.parametrize(("flavour", "mode"), MODES)
async def test_without_a_policy_the_429_goes_back_to_the_caller(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], flavour: str, mode: str
) -> None:
    api, base = fake
    api.plan = [429]
    before = await bucket(daemon, "api")
    status, answer = await post(
        daemon, flavour, mode, f"{base}/v1/embeddings", {"input": "hi"}, provider="api"
    )
    assert status == 429
    assert answer["error"]["code"] == "rate_limit_exceeded"  # the body is still readable
    after = await bucket(daemon, "api")
    assert after["reports"]["429"] == before["reports"]["429"] + 1
    assert len(api.seen) == 1
    await reset(daemon, "api")


@pytest.mark.parametrize(("flavour", "mode"), MODES)
async def test_the_usage_of_the_answer_settles_the_token_estimate(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], flavour: str, mode: str
) -> None:
    # 2,000 tokens that refill at 1 a minute. The call is estimated at ~910 tokens
    # (max_tokens 900 + the prompt) and uses 100: ~1,900 must be left.
    _, base = fake
    provider = f"llm-{flavour}-{mode}"
    status, _ = await post(daemon, flavour, mode, f"{base}/v1/chat/completions", CHAT, provider=provider)
    assert status == 200
    async with AsyncClient(daemon.socket_path) as client:
        # Without settling only ~1,090 would be left.
        await client.acquire(provider, {"requests": 1, "tokens": 1850}, timeout=0)
        with pytest.raises(PermitTimeout):
            await client.acquire(provider, {"requests": 1, "tokens": 100}, timeout=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_each_module_binds_its_own_library(flavour: str) -> None:
    # httpx refuses a transport or a body stream of the other library's classes.
    lib, transports = FLAVOURS[flavour]
    (other,) = (other for name, (other, _) in FLAVOURS.items() if name != flavour)
    client = types.SimpleNamespace()
    sync = transports.RateLimitTransport(client)
    asynchronous = transports.AsyncRateLimitTransport(client)
    assert isinstance(sync, lib.BaseTransport)
    assert not isinstance(sync, other.BaseTransport)
    assert isinstance(asynchronous, lib.AsyncBaseTransport)
    assert not isinstance(asynchronous, other.AsyncBaseTransport)
    assert type(sync.inner) is lib.HTTPTransport
    assert type(asynchronous.inner) is lib.AsyncHTTPTransport
    assert transports.NETWORK_ERRORS == sync.network_errors == (lib.TransportError,)
    streams = sync._streams
    assert issubclass(streams.sync, lib.SyncByteStream)
    assert issubclass(streams.async_, lib.AsyncByteStream)
    assert not issubclass(streams.sync, other.SyncByteStream)

    subclass: Any = type("Subclass", (transports.RateLimitTransport,), {})
    assert subclass._library is lib  # a user's subclass keeps the library
    sync.close()
    await asynchronous.aclose()


def test_a_bucket_without_headers_is_refused() -> None:
    client = types.SimpleNamespace()
    with pytest.raises(ValueError, match=r"bucket_headers\['keys'\]\['b'\]: no headers"):
        rl_httpx.RateLimitTransport(
            client,  # type: ignore[arg-type]
            provider="keys",
            bucket_headers={"keys": {"a": {"Authorization": "Bearer a"}, "b": {}}},
        )


@pytest.mark.parametrize(("flavour", "mode"), MODES)
async def test_a_transport_error_is_reported_as_network_error(
    daemon: RunningDaemon, flavour: str, mode: str
) -> None:
    lib, transports = FLAVOURS[flavour]
    before = await bucket(daemon, "api")

    def refuse(request: Any) -> Any:
        raise lib.ConnectError("refused", request=request)

    if mode == "sync":

        def blocking() -> None:
            with Client(daemon.socket_path) as client:
                transport = transports.RateLimitTransport(client, lib.MockTransport(refuse), provider="api")
                with lib.Client(transport=transport) as http, pytest.raises(lib.ConnectError):
                    http.get("http://api.test/x")

        await asyncio.to_thread(blocking)
    else:
        async with AsyncClient(daemon.socket_path) as client:
            transport = transports.AsyncRateLimitTransport(client, lib.MockTransport(refuse), provider="api")
            async with lib.AsyncClient(transport=transport) as http:
                with pytest.raises(lib.ConnectError):
                    await http.get("http://api.test/x")
    after = await bucket(daemon, "api")
    assert after["reports"]["network_error"] == before["reports"]["network_error"] + 1


def test_the_aiohttp_middleware_refuses_a_bucket_without_headers() -> None:
    from ratelimitd.aiohttp import RateLimitMiddleware

    with pytest.raises(ValueError, match=r"bucket_headers\['keys'\]\['b'\]: no headers"):
        RateLimitMiddleware(
            client=types.SimpleNamespace(),  # type: ignore[arg-type]
            bucket_headers={"keys": {"a": {"Authorization": "Bearer a"}, "b": {}}},
        )


async def test_a_granted_bucket_without_headers_is_not_sent(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str]
) -> None:
    api, base = fake
    api.fail_keys = {"key-a"}  # a 429 on key a: the policy fails over to b, which has no key here
    only_a = {"keys": {"a": KEYS["keys"]["a"]}}
    with pytest.raises(MissingBucketHeaders, match="no headers for bucket 'b'"):
        await post(
            daemon,
            "httpx2",
            "async",
            f"{base}/v1/embeddings",
            {"input": "hi"},
            provider="keys",
            bucket_headers=only_a,
            policy="extract",
        )
    assert [seen.key for seen in api.seen] == ["key-a"]
    await reset(daemon, "keys")


async def test_an_idempotency_key_already_set_is_kept_on_every_attempt(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str]
) -> None:
    api, base = fake
    api.fail_keys = {"key-a"}
    async with AsyncClient(daemon.socket_path) as client:
        transport = rl_httpx2.AsyncRateLimitTransport(
            client, provider="keys", bucket_headers=KEYS, policy="extract"
        )
        async with httpx2.AsyncClient(transport=transport) as http:
            response = await http.post(
                f"{base}/v1/embeddings", json={"input": "hi"}, headers={"Idempotency-Key": "caller-key-1"}
            )
        await client.reset("keys")
    assert response.status_code == 200
    assert [(seen.key, seen.idempotency_key) for seen in api.seen] == [
        ("key-a", "caller-key-1"),
        ("key-b", "caller-key-1"),
    ]


async def test_a_token_cost_on_a_provider_without_token_limits_is_warned_about_once(
    daemon: RunningDaemon, fake: tuple[FakeLLM, str], caplog: pytest.LogCaptureFixture
) -> None:
    # `requests-only` limits requests only: the daemon ignores the estimated tokens and says so;
    # the client warns once, and the reports carry no `used` for a unit nobody limits.
    _, base = fake
    before = await bucket(daemon, "requests-only")
    with caplog.at_level("WARNING"):
        for _ in range(2):
            status, _ = await post(
                daemon, "httpx2", "async", f"{base}/v1/chat/completions", CHAT, provider="requests-only"
            )
            assert status == 200
    after = await bucket(daemon, "requests-only")
    assert after["reports"]["2xx"] == before["reports"]["2xx"] + 2
    warnings = [r.getMessage() for r in caplog.records if "does not limit the unit" in r.getMessage()]
    assert len(warnings) == 1
    assert "'requests-only' does not limit the unit 'tokens'" in warnings[0]
    assert not [r for r in caplog.records if "could not be sent" in r.getMessage()]
