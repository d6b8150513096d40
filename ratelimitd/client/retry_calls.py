"""Calls made under permits, with retries and failover across buckets.

Shell: asks the daemon for a permit before every attempt and reports how it went
after it, sleeps between attempts (tenacity; the sleep is injectable), reads the
wall clock only to turn an HTTP-date Retry-After into seconds.

    result = await call_async(client, "api", send, describe, policy=preset("resolve"))

`send(ctx)` makes one call with `ctx.bucket` (the API key the daemon chose) and
`ctx.headers` (the idempotency key, the same on every attempt); `describe(result)`
says how it went (`Outcome`). A failover status excludes that bucket for the next
attempts of this logical request (`exclude`); once every bucket was tried, a new
round starts without exclusions and the daemon decides who is available. Those
decisions are `ratelimitd.client.retry_steps` (pure), shared by the async and blocking loops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypedDict, TypeVar

import orjson
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type

from ratelimitd.client.errors import AllBucketsExhausted, PermitTimeout
from ratelimitd.client.retry import (
    DEFAULT_IDEMPOTENCY_HEADER,
    Attempt,
    AttemptFailed,
    RetriesExhausted,
    RetryPolicy,
    preset,
)
from ratelimitd.client.retry_steps import AttemptContext, LogicalRequest, Outcome

if TYPE_CHECKING:
    from http.client import HTTPResponse

    from tenacity.retry import retry_base
    from tenacity.stop import stop_base
    from tenacity.wait import wait_base

    from ratelimitd.client.async_client import AsyncClient
    from ratelimitd.client.sync import Client
    from ratelimitd.client.types import Cost, Permit, ReportDetails

__all__ = (
    "RATE_LIMIT_HEADER_PREFIXES",
    "AttemptContext",
    "Outcome",
    "call_async",
    "call_sync",
    "error_reason",
    "rate_limit_headers",
    "urlopen",
)

R = TypeVar("R")
logger = logging.getLogger(__name__)

# Response headers worth sending to the daemon (headers.py reads these families).
RATE_LIMIT_HEADER_PREFIXES: Final = (
    "retry-after",
    "x-amz-retry-after",
    "x-ratelimit",
    "x-rate-limit",
    "ratelimit",
    "anthropic-ratelimit",
)
_MAX_REASON_CHARS: Final = 128  # protocol.md, report.reason


def rate_limit_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """The rate-limit related headers only (keeps report lines short; no cookies or tokens)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    # str(): aiohttp's header names are `istr`, which orjson refuses as keys.
    return {
        str(name): str(value)
        for name, value in items
        if name.lower().startswith(RATE_LIMIT_HEADER_PREFIXES) and len(value) <= 1024
    }


def error_reason(body: bytes) -> str | None:
    """The provider's error code from a JSON error body, e.g. OpenAI's `insufficient_quota`.

    Reads `{"error": {"code"|"type": ...}}`, `{"error": "..."}` and `{"code": ...}`; None otherwise.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error", data)
    candidates: list[Any] = [error] if isinstance(error, str) else []
    if isinstance(error, dict):
        candidates += [error.get("code"), error.get("type")]
    for value in candidates:
        if isinstance(value, str) and 0 < len(value) <= _MAX_REASON_CHARS and value.isprintable():
            return value
    return None


def _details(outcome: Outcome) -> ReportDetails:
    """What a report says beyond the status: the body's error code, rate-limit headers, usage."""
    details: ReportDetails = {"reason": outcome.reason, "headers": rate_limit_headers(outcome.headers)}
    if outcome.used:
        details["used"] = outcome.used
    return details


def _start(
    provider: str, policy: RetryPolicy | str, idempotency_header: str, idempotency_key: str | None
) -> LogicalRequest[R]:
    """A new logical request: the policy (a preset by name) and its idempotency key (default a UUID)."""
    rules = preset(policy) if isinstance(policy, str) else policy
    return LogicalRequest(provider, rules, idempotency_header, idempotency_key or uuid.uuid4().hex)


def _log(request: LogicalRequest[Any], attempt: Attempt) -> None:
    logger.info("%s request %s: %s", request.provider, request.idempotency_key[:8], attempt.describe())


def _settle(
    request: LogicalRequest[R],
    permit: Permit,
    outcome: Outcome,
    result: R,
    release: Callable[[R], object] | None,
) -> R:
    """After the report: the result, or (released) the AttemptFailed the policy retries."""
    failure = request.judge(permit, outcome, result, now_wall=time.time())
    if failure is not None:
        if release is not None:
            release(result)
        raise failure
    if len(request.attempts) > 1:
        _log(request, request.attempts[-1])  # how a request that needed retries ended
    return result


class _TenacityHooks(TypedDict):
    stop: stop_base
    wait: wait_base
    retry: retry_base
    before_sleep: Callable[[RetryCallState], None]
    retry_error_callback: Callable[[RetryCallState], NoReturn]


def _tenacity_hooks(request: LogicalRequest[Any], rng: Callable[[], float]) -> _TenacityHooks:
    """What both loops hand tenacity: the policy's stop and wait, retry AttemptFailed only,
    log each wait, end with RetriesExhausted.
    """

    def log_wait(retry_state: RetryCallState) -> None:
        _log(request, request.note_wait(retry_state.upcoming_sleep))

    def give_up(retry_state: RetryCallState) -> NoReturn:
        raise request.give_up(retry_state)

    return {
        "stop": request.policy.stop(),
        "wait": request.policy.wait(rng),
        "retry": retry_if_exception_type(AttemptFailed),
        "before_sleep": log_wait,
        "retry_error_callback": give_up,
    }


def _only_attempt_failed(request: LogicalRequest[Any], failure: AttemptFailed) -> RetriesExhausted:
    """What tenacity raises when the only attempt of a one-attempt policy failed.

    Such a policy (the httpx transports' default) never waits or retries, so its loop skips
    tenacity's per-call state, about half the transports' own CPU time per request.
    """
    return request.exhausted(failure, attempt_number=1, wait=0.0)


async def call_async(
    client: AsyncClient,
    provider: str,
    send: Callable[[AttemptContext], Awaitable[R]],
    describe: Callable[[R], Outcome | Awaitable[Outcome]],
    *,
    policy: RetryPolicy | str = "extract",
    cost: Cost = 1,
    network_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError),
    idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
    idempotency_key: str | None = None,
    rng: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    release: Callable[[R], object] | None = None,
    wait_for_reports: bool = True,
) -> R:
    """Run `send` under permits until it succeeds or the policy gives up.

    :param describe: the `Outcome` of a result (may be a coroutine function).
    :param network_errors: exceptions of `send` that count as `network_error` (retried).
    :param idempotency_key: sent on every attempt; default a new random UUID.
    :param release: called on the result of each retried attempt (e.g. free a connection).
    :param wait_for_reports: False sends the reports of answers without waiting for the
        daemon's (`report_soon`): one round trip less per call, for callers that ignore it.
    :returns: the result of the first attempt whose status the policy does not retry.
    :raises RetriesExhausted: every attempt failed; `.attempts` lists bucket, status, reason.
    """
    request: LogicalRequest[R] = _start(provider, policy, idempotency_header, idempotency_key)

    async def acquire() -> Permit:
        while True:
            try:
                return await client.acquire(provider, cost, request.policy.acquire_timeout, request.excluded)
            except (AllBucketsExhausted, PermitTimeout) as exc:
                refusal = request.refused(exc)
                if refusal is not None:
                    raise refusal from exc

    async def attempt() -> R:
        permit = await acquire()
        try:
            result = await send(request.context(permit))
        except network_errors as exc:
            await client.report_for(permit, "network_error")
            failure = request.network_error(permit, exc)
            if failure is None:
                raise
            raise failure from exc
        described = describe(result)
        outcome = await described if inspect.isawaitable(described) else described
        if outcome.report and wait_for_reports:
            await client.report_for(permit, outcome.status, **_details(outcome))
        elif outcome.report:
            await client.report_soon(permit, outcome.status, **_details(outcome))
        return _settle(request, permit, outcome, result, release)

    if request.policy.max_attempts == 1:
        try:
            return await attempt()
        except AttemptFailed as failure:
            raise _only_attempt_failed(request, failure) from None
    result: R = await AsyncRetrying(sleep=sleep, **_tenacity_hooks(request, rng))(attempt)
    return result


def call_sync(
    client: Client,
    provider: str,
    send: Callable[[AttemptContext], R],
    describe: Callable[[R], Outcome],
    *,
    policy: RetryPolicy | str = "extract",
    cost: Cost = 1,
    network_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError),
    idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
    idempotency_key: str | None = None,
    rng: Callable[[], float] = random.random,
    sleep: Callable[[float], None] = time.sleep,
    release: Callable[[R], object] | None = None,
    wait_for_reports: bool = True,
) -> R:
    """`call_async` for blocking code and plain callables (same parameters, a blocking `Client`)."""
    request: LogicalRequest[R] = _start(provider, policy, idempotency_header, idempotency_key)

    def acquire() -> Permit:
        while True:
            try:
                return client.acquire(provider, cost, request.policy.acquire_timeout, request.excluded)
            except (AllBucketsExhausted, PermitTimeout) as exc:
                refusal = request.refused(exc)
                if refusal is not None:
                    raise refusal from exc

    def attempt() -> R:
        permit = acquire()
        try:
            result = send(request.context(permit))
        except network_errors as exc:
            client.report_for(permit, "network_error")
            failure = request.network_error(permit, exc)
            if failure is None:
                raise
            raise failure from exc
        outcome = describe(result)
        if outcome.report and wait_for_reports:
            client.report_for(permit, outcome.status, **_details(outcome))
        elif outcome.report:
            client.report_soon(permit, outcome.status, **_details(outcome))
        return _settle(request, permit, outcome, result, release)

    if request.policy.max_attempts == 1:
        try:
            return attempt()
        except AttemptFailed as failure:
            raise _only_attempt_failed(request, failure) from None
    result: R = Retrying(sleep=sleep, **_tenacity_hooks(request, rng))(attempt)
    return result


def urlopen(
    client: Client,
    provider: str,
    request: str | urllib.request.Request,
    *,
    policy: RetryPolicy | str = "extract",
    bucket_headers: Mapping[str, Mapping[str, str]] | None = None,
    timeout: float = 30.0,
    cost: Cost = 1,
    idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
    rng: Callable[[], float] = random.random,
    sleep: Callable[[float], None] = time.sleep,
) -> HTTPResponse:
    """`urllib.request.urlopen` under permits, with retries and failover.

    :param bucket_headers: headers per bucket name, e.g. `{"key-a": {"Authorization": "Bearer ..."}}`:
        the daemon only knows bucket names, never the secrets.
    :returns: the response of the first attempt the policy does not retry.
    :raises urllib.error.HTTPError: a status the policy does not retry (urllib's convention).
    :raises RetriesExhausted: every attempt failed (`.last_result` is the last HTTPError, closed).
    """
    base = request if isinstance(request, urllib.request.Request) else urllib.request.Request(request)
    per_bucket = bucket_headers or {}

    def send(ctx: AttemptContext) -> HTTPResponse | urllib.error.HTTPError:
        attempt = urllib.request.Request(
            base.full_url, data=base.data, headers=dict(base.header_items()), method=base.get_method()
        )
        for name, value in {**per_bucket.get(ctx.bucket, {}), **ctx.headers}.items():
            attempt.add_header(name, value)
        try:
            response: HTTPResponse = urllib.request.urlopen(attempt, timeout=timeout)
        except urllib.error.HTTPError as exc:
            return exc
        return response

    def describe(result: HTTPResponse | urllib.error.HTTPError) -> Outcome:
        status = result.code if isinstance(result, urllib.error.HTTPError) else result.status
        return Outcome(status, dict(result.headers.items()))

    result = call_sync(
        client,
        provider,
        send,
        describe,
        policy=policy,
        cost=cost,
        idempotency_header=idempotency_header,
        rng=rng,
        sleep=sleep,
        release=_close,
    )
    if isinstance(result, urllib.error.HTTPError):
        raise result
    return result


def _close(result: HTTPResponse | urllib.error.HTTPError) -> None:
    result.close()
