"""Calls made under permits, with retries and failover across buckets (issue 7).

Shell: asks the daemon for a permit before every attempt and reports how it went
after it, sleeps between attempts (tenacity; the sleep is injectable), reads the
wall clock only to turn an HTTP-date Retry-After into seconds.

    result = await call_async(client, "api", send, describe, policy=preset("resolve"))

`send(ctx)` makes one call with `ctx.bucket` (the API key the daemon chose) and
`ctx.headers` (the idempotency key, the same on every attempt); `describe(result)`
says how it went (`Outcome`). A failover status excludes that bucket for the next
attempts of this logical request (`exclude`); once every bucket was tried, a new
round starts without exclusions and the daemon decides who is available.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

import orjson
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type

from ratelimitd.client_errors import AllBucketsExhausted, PermitTimeout
from ratelimitd.headers import parse_headers
from ratelimitd.retry import (
    DEFAULT_IDEMPOTENCY_HEADER,
    Attempt,
    AttemptFailed,
    RetriesExhausted,
    RetryPolicy,
    preset,
)

if TYPE_CHECKING:
    from http.client import HTTPResponse

    from ratelimitd.client import AsyncClient
    from ratelimitd.client_sync import Client
    from ratelimitd.client_types import Cost, Permit

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


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one call went: an HTTP status or `network_error`, its headers, the body's error code."""

    status: int | Literal["network_error"]
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptContext:
    """What `send` needs for one attempt: the permit's bucket and the headers to add."""

    provider: str
    permit: Permit
    number: int
    idempotency_header: str
    idempotency_key: str

    @property
    def bucket(self) -> str:
        return self.permit.bucket

    @property
    def headers(self) -> dict[str, str]:
        """Headers every attempt of the logical request carries (the idempotency key)."""
        return {self.idempotency_header: self.idempotency_key}


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


class _LogicalRequest(Generic[R]):
    """The state one logical request keeps across its attempts (shared by async and sync)."""

    def __init__(
        self, provider: str, policy: RetryPolicy, idempotency_header: str, idempotency_key: str
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.idempotency_header = idempotency_header
        self.idempotency_key = idempotency_key
        self.excluded: list[str] = []
        self.tried: set[str] = set()
        self.attempts: list[Attempt] = []
        self.last_result: R | None = None

    @property
    def number(self) -> int:
        return len(self.attempts) + 1

    def new_round(self, exc: AllBucketsExhausted) -> bool:
        """Every bucket not excluded is unavailable: drop the exclusions and ask again (once)."""
        if self.excluded and "excluded" in exc.reasons.values():
            self.excluded.clear()
            return True
        return False

    def refused(self, exc: PermitTimeout | AllBucketsExhausted) -> AttemptFailed:
        """The daemon granted no permit: wait its `retry_after`."""
        if isinstance(exc, AllBucketsExhausted):
            reason = ", ".join(f"{b} {why}" for b, why in exc.reasons.items()) or exc.message
        else:
            reason = "no permit within the acquire timeout"
        attempt = Attempt(self.number, None, exc.code.value, reason)
        self.attempts.append(attempt)
        return AttemptFailed(attempt, source="daemon", retry_after=exc.retry_after)

    def context(self, permit: Permit) -> AttemptContext:
        return AttemptContext(
            self.provider, permit, self.number, self.idempotency_header, self.idempotency_key
        )

    def judge(self, permit: Permit, outcome: Outcome, result: R | None) -> AttemptFailed | None:
        """Record the attempt; an AttemptFailed when the policy retries its status."""
        self.last_result = result
        status = outcome.status
        bucket = permit.bucket
        if not self.policy.fails_over(status):
            self.attempts.append(Attempt(self.number, bucket, status, outcome.reason or "done"))
            return None
        retry_after = None
        if outcome.headers:
            hint = parse_headers(
                outcome.headers, status=status if isinstance(status, int) else None, now_wall=time.time()
            )
            retry_after = hint.retry_after
        fresh = bucket not in self.tried
        self.tried.add(bucket)
        if bucket not in self.excluded:
            self.excluded.append(bucket)
        why = outcome.reason or ("failover" if retry_after is None else f"Retry-After {retry_after:g} s")
        attempt = Attempt(self.number, bucket, status, why)
        self.attempts.append(attempt)
        return AttemptFailed(
            attempt, source="server", retry_after=retry_after, fresh_failover=fresh, result=result
        )

    def record_wait(self, retry_state: RetryCallState) -> None:
        """tenacity `before_sleep`: note the wait chosen after the last attempt."""
        last = self.attempts[-1]
        self.attempts[-1] = noted = Attempt(
            last.number, last.bucket, last.status, last.reason, retry_state.upcoming_sleep
        )
        logger.info("%s request %s: %s", self.provider, self.idempotency_key[:8], noted.describe())

    def done(self) -> None:
        """Log how a request that needed retries ended."""
        if len(self.attempts) > 1:
            last = self.attempts[-1]
            logger.info("%s request %s: %s", self.provider, self.idempotency_key[:8], last.describe())

    def give_up(self, retry_state: RetryCallState) -> RetriesExhausted:
        """tenacity `retry_error_callback`: the aggregated error, saying why the retries stopped."""
        outcome = retry_state.outcome
        failure = outcome.exception() if outcome is not None else None
        retry_after = failure.retry_after if isinstance(failure, AttemptFailed) else None
        policy = self.policy
        wait = retry_state.upcoming_sleep
        if retry_state.attempt_number >= policy.max_attempts:
            why = f"max_attempts {policy.max_attempts} reached"
        elif policy.max_retry_after is not None and wait > policy.max_retry_after:
            why = f"asked to wait {wait:.3f} s, over max_retry_after {policy.max_retry_after:g} s: deferred"
        else:
            why = f"waiting {wait:.3f} s more would pass max_time {policy.max_time} s"
        return RetriesExhausted(
            self.provider,
            policy.name,
            tuple(self.attempts),
            why=why,
            retry_after=retry_after,
            last_result=self.last_result,
        )


def _policy(policy: RetryPolicy | str) -> RetryPolicy:
    return preset(policy) if isinstance(policy, str) else policy


def _raise(error: RetriesExhausted) -> None:
    raise error


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
) -> R:
    """Run `send` under permits until it succeeds or the policy gives up.

    :param describe: the `Outcome` of a result (may be a coroutine function).
    :param network_errors: exceptions of `send` that count as `network_error` (retried).
    :param idempotency_key: sent on every attempt; default a new random UUID.
    :param release: called on the result of each retried attempt (e.g. free a connection).
    :returns: the result of the first attempt whose status the policy does not retry.
    :raises RetriesExhausted: every attempt failed; `.attempts` lists bucket, status, reason.
    """
    rules = _policy(policy)
    state: _LogicalRequest[R] = _LogicalRequest(
        provider, rules, idempotency_header, idempotency_key or uuid.uuid4().hex
    )

    async def attempt() -> R:
        try:
            try:
                permit = await client.acquire(provider, cost, rules.acquire_timeout, state.excluded)
            except AllBucketsExhausted as exc:
                if not state.new_round(exc):
                    raise
                permit = await client.acquire(provider, cost, rules.acquire_timeout, ())
        except (AllBucketsExhausted, PermitTimeout) as exc:
            raise state.refused(exc) from exc
        context = state.context(permit)
        try:
            result = await send(context)
        except network_errors as exc:
            await client.report_for(permit, "network_error")
            failure = state.judge(permit, Outcome("network_error", reason=type(exc).__name__), None)
            if failure is None:
                raise
            raise failure from exc
        described = describe(result)
        outcome = await described if inspect.isawaitable(described) else described
        await client.report_for(
            permit, outcome.status, reason=outcome.reason, headers=rate_limit_headers(outcome.headers)
        )
        failure = state.judge(permit, outcome, result)
        if failure is not None:
            if release is not None:
                release(result)
            raise failure
        state.done()
        return result

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=rules.stop(),
        wait=rules.wait(rng),
        retry=retry_if_exception_type(AttemptFailed),
        before_sleep=state.record_wait,
        retry_error_callback=lambda rs: _raise(state.give_up(rs)),
    )
    result: R = await retrying(attempt)
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
) -> R:
    """`call_async` for blocking code and plain callables (same parameters, a blocking `Client`)."""
    rules = _policy(policy)
    state: _LogicalRequest[R] = _LogicalRequest(
        provider, rules, idempotency_header, idempotency_key or uuid.uuid4().hex
    )

    def attempt() -> R:
        try:
            try:
                permit = client.acquire(provider, cost, rules.acquire_timeout, state.excluded)
            except AllBucketsExhausted as exc:
                if not state.new_round(exc):
                    raise
                permit = client.acquire(provider, cost, rules.acquire_timeout, ())
        except (AllBucketsExhausted, PermitTimeout) as exc:
            raise state.refused(exc) from exc
        context = state.context(permit)
        try:
            result = send(context)
        except network_errors as exc:
            client.report_for(permit, "network_error")
            failure = state.judge(permit, Outcome("network_error", reason=type(exc).__name__), None)
            if failure is None:
                raise
            raise failure from exc
        outcome = describe(result)
        client.report_for(
            permit, outcome.status, reason=outcome.reason, headers=rate_limit_headers(outcome.headers)
        )
        failure = state.judge(permit, outcome, result)
        if failure is not None:
            if release is not None:
                release(result)
            raise failure
        state.done()
        return result

    retrying = Retrying(
        sleep=sleep,
        stop=rules.stop(),
        wait=rules.wait(rng),
        retry=retry_if_exception_type(AttemptFailed),
        before_sleep=state.record_wait,
        retry_error_callback=lambda rs: _raise(state.give_up(rs)),
    )
    result: R = retrying(attempt)
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
