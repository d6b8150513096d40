"""`limited` as a decorator and a context manager, sync and async, against a real daemon."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from ratelimitd.client import AsyncClient, Client, PermitTimeout
from ratelimitd.limited import limited

if TYPE_CHECKING:
    from daemons import DaemonFactory, RunningDaemon

CONFIG = """
[server]
create_providers = false

[providers.plain]
rate = "1000/second"
burst = 100

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


class HTTPError(Exception):
    """Like the error of an HTTP library: it carries the response's status."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: DaemonFactory) -> RunningDaemon:
    return module_daemon_factory(CONFIG)


async def reports(daemon: RunningDaemon, provider: str, bucket: str = "default") -> dict[str, int]:
    async with AsyncClient(daemon.socket_path) as client:
        state = (await client.status(provider))[provider]["buckets"][bucket]
    counts: dict[str, int] = {k: v for k, v in state["reports"].items() if v}
    counts["granted"] = state["granted"]
    return counts


async def test_a_decorated_function_is_acquired_and_reported(daemon: RunningDaemon) -> None:
    def blocking() -> list[Any]:
        with Client(daemon.socket_path) as client:

            @limited("plain", client=client)
            def fetch(doi: str) -> str:
                return f"record of {doi}"

            @limited("plain", client=client)
            def refused() -> None:
                raise HTTPError(429)

            results: list[Any] = [fetch("10.1/x")]
            with pytest.raises(HTTPError):
                refused()
            return results

    assert await asyncio.to_thread(blocking) == ["record of 10.1/x"]
    assert await reports(daemon, "plain") == {"granted": 2, "2xx": 1, "429": 1}
    async with AsyncClient(daemon.socket_path) as client:
        await client.reset("plain")


async def test_an_async_function_fails_over_under_a_policy(daemon: RunningDaemon) -> None:
    seen: list[int] = []

    async with AsyncClient(daemon.socket_path) as client:

        @limited("keys", client=client, policy="extract")
        async def fetch() -> str:
            seen.append(len(seen))
            if len(seen) == 1:
                raise HTTPError(429)
            return "done"

        assert await fetch() == "done"
        await client.reset("keys")
    assert seen == [0, 1]
    assert await reports(daemon, "keys", "a") == {"granted": 1, "429": 1}
    assert await reports(daemon, "keys", "b") == {"granted": 1, "2xx": 1}


async def test_context_managers_report_the_block_and_settle_its_usage(daemon: RunningDaemon) -> None:
    async with AsyncClient(daemon.socket_path) as client:
        async with limited("llm", client=client, cost={"requests": 1, "tokens": 1500}) as call:
            call.used = {"tokens": 100}  # what the answer's usage said
        # 1,500 estimated, 100 used: 1,900 of the 2,000 are left only because it settled.
        await client.acquire("llm", {"requests": 1, "tokens": 1850}, timeout=0)
        with pytest.raises(PermitTimeout):
            await client.acquire("llm", {"requests": 1, "tokens": 100}, timeout=0)

    def blocking() -> None:
        with (
            Client(daemon.socket_path) as client,
            pytest.raises(ConnectionResetError),
            limited("plain", client=client),
        ):
            raise ConnectionResetError("reset by peer")

    before = await reports(daemon, "plain")
    await asyncio.to_thread(blocking)
    after = await reports(daemon, "plain")
    assert after["granted"] == before["granted"] + 1
    assert after["network_error"] == before.get("network_error", 0) + 1


async def test_an_exception_that_is_not_the_providers_is_not_reported(daemon: RunningDaemon) -> None:
    async with AsyncClient(daemon.socket_path) as client:
        before = await reports(daemon, "keys", "a")

        @limited("keys", client=client)
        async def buggy() -> None:
            raise KeyError("a bug here, not an answer from the API")

        with pytest.raises(KeyError):
            await buggy()
    after = await reports(daemon, "keys", "a")
    assert after["granted"] == before["granted"] + 1
    assert {k: v for k, v in after.items() if k != "granted"} == {
        k: v for k, v in before.items() if k != "granted"
    }
