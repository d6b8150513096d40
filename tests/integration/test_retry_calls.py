"""The two attempt loops against a real daemon: a `send` that raises instead of answering.

`call_async` and `call_sync` run the same steps (retry_steps decides); each test runs
both. Bucket `a` fails with a network error, bucket `b` answers 200. Waits go to a
recorder; the assertions are on the result, the waits and the reports the daemon counted.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from ratelimitd.client import AsyncClient, Client
from ratelimitd.client.retry_calls import AttemptContext, Outcome, call_async, call_sync
from ratelimitd.retry import RetriesExhausted, RetryPolicy, preset

if TYPE_CHECKING:
    from daemons import DaemonFactory, RunningDaemon

PROVIDERS = ("retried_async", "retried_sync", "raised_async", "raised_sync", "single_async", "single_sync")
CONFIG = "".join(
    f'[providers.{name}]\nbuckets = ["a", "b"]\nselection = "failover"\nrate = "1000/second"\nburst = 50\n'
    for name in PROVIDERS
)
NOT_ON_NETWORK_ERRORS = RetryPolicy(failover_on=frozenset({429}))


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: DaemonFactory) -> RunningDaemon:
    return module_daemon_factory(CONFIG)


def send(ctx: AttemptContext) -> str:
    if ctx.bucket == "a":
        raise ConnectionResetError("reset by peer")
    return f"answer from {ctx.bucket}"


async def send_async(ctx: AttemptContext) -> str:
    return send(ctx)


def describe(result: str) -> Outcome:
    return Outcome(200)


async def call(
    daemon: RunningDaemon, mode: str, policy: RetryPolicy, waits: list[float], kind: str | None = None
) -> str:
    """One logical request to provider `<kind>_<mode>` through that mode's loop (kind by default
    `retried` or `raised`, by whether the policy retries network errors)."""
    kind = kind or ("retried" if policy.fails_over("network_error") else "raised")
    provider = f"{kind}_{mode}"
    if mode == "sync":

        def blocking() -> str:
            with Client(daemon.socket_path) as client:
                return call_sync(
                    client, provider, send, describe, policy=policy, rng=lambda: 0.5, sleep=waits.append
                )

        return await asyncio.to_thread(blocking)

    async def record(delay: float) -> None:
        waits.append(delay)

    async with AsyncClient(daemon.socket_path) as client:
        return await call_async(
            client, provider, send_async, describe, policy=policy, rng=lambda: 0.5, sleep=record
        )


async def reports(daemon: RunningDaemon, provider: str) -> dict[str, dict[str, int]]:
    """The report counts per bucket the daemon holds, status classes never seen left out."""
    async with AsyncClient(daemon.socket_path) as client:
        buckets = (await client.status(provider))[provider]["buckets"]
    return {name: {k: n for k, n in buckets[name]["reports"].items() if n} for name in ("a", "b")}


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_a_network_error_is_reported_and_fails_over(daemon: RunningDaemon, mode: str) -> None:
    waits: list[float] = []
    assert await call(daemon, mode, preset("extract"), waits) == "answer from b"
    assert waits == [0.25]  # a new bucket: the backoff (0.5 x the first bound, 0.5 s)
    assert await reports(daemon, f"retried_{mode}") == {"a": {"network_error": 1}, "b": {"2xx": 1}}


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_a_network_error_the_policy_does_not_retry_is_raised_as_is(
    daemon: RunningDaemon, mode: str
) -> None:
    waits: list[float] = []
    with pytest.raises(ConnectionResetError, match="reset by peer"):
        await call(daemon, mode, NOT_ON_NETWORK_ERRORS, waits)
    assert waits == []
    assert await reports(daemon, f"raised_{mode}") == {"a": {"network_error": 1}, "b": {}}


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_a_one_attempt_policy_gives_up_after_its_only_attempt(daemon: RunningDaemon, mode: str) -> None:
    waits: list[float] = []
    with pytest.raises(RetriesExhausted) as caught:
        await call(daemon, mode, preset("extract", max_attempts=1), waits, kind="single")
    assert caught.value.why == "max_attempts 1 reached"
    assert [(a.number, a.bucket, a.status) for a in caught.value.attempts] == [(1, "a", "network_error")]
    assert caught.value.last_result is None
    assert waits == []
    assert await reports(daemon, f"single_{mode}") == {"a": {"network_error": 1}, "b": {}}
