"""The httpx transports, written once for httpx and its fork httpx2.

Shell: a transport wraps an inner transport. For a request whose host maps to a provider
it estimates the cost, acquires a permit, sets the chosen bucket's headers (its API key)
and the idempotency key, sends, and reports the status, the rate-limit headers and, once
the body has passed through, the tokens the answer's `usage` counted (settling the
estimate). With a retry policy it retries and fails over across buckets
(`ratelimitd.client.retry_calls`); without one (the default) every request is one
attempt and the caller's own retry loop (an SDK's `max_retries`) decides.

`ratelimitd.integrations.httpx` and `.httpx2` bind these classes to a library in one
class statement each: the library's request, response and transport types as the
generic parameters (what mypy sees), its `BaseTransport` as the second base, and the
module itself as `library=` (what is used of it at run time, `httpx_library.Library`).
Nothing here imports either library.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

import orjson

from ratelimitd.client.errors import BadRequest, RatelimitdClientError
from ratelimitd.client.retry import DEFAULT_IDEMPOTENCY_HEADER, RetriesExhausted, RetryPolicy
from ratelimitd.client.retry_calls import Outcome, call_async, call_sync, error_reason, rate_limit_headers
from ratelimitd.integrations.bucket_headers import check_bucket_headers, header_names, headers_for
from ratelimitd.integrations.httpx_library import (
    AsyncSender,
    Library,
    SyncSender,
    UsageStreams,
    usage_streams,
)
from ratelimitd.integrations.tokens import TOKEN_UNITS, TokenUsage, estimate_body
from ratelimitd.integrations.usage_stream import UsageReader

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Iterator

    from ratelimitd.client.async_client import AsyncClient
    from ratelimitd.client.retry_steps import AttemptContext
    from ratelimitd.client.sync import Client
    from ratelimitd.client.types import Cost, Permit

__all__ = (
    "ONE_ATTEMPT",
    "AsyncRateLimiting",
    "SyncRateLimiting",
    "report_failed",
    "token_cost",
    "used_units",
)

logger = logging.getLogger(__name__)

#: No retries here: every request is one attempt, and the caller's loop retries.
ONE_ATTEMPT = RetryPolicy(name="one_attempt", max_attempts=1)
_MAX_ERROR_BODY = 1024 * 1024  # an error body is read (for its error code) up to this size


class _URL(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def path(self) -> str: ...


class RequestLike(Protocol):
    """What the transports use of an httpx (or httpx2) `Request`."""

    @property
    def url(self) -> _URL: ...
    @property
    def method(self) -> str: ...
    @property
    def headers(self) -> MutableMapping[str, str]: ...
    @property
    def content(self) -> bytes: ...


class ResponseLike(Protocol):
    """What the transports use of an httpx (or httpx2) `Response`."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...

    # The library's byte stream, replaced by one that reads the usage: its type is the library's.
    stream: Any

    def read(self) -> bytes: ...
    def close(self) -> None: ...
    async def aread(self) -> bytes: ...
    async def aclose(self) -> None: ...


RequestT = TypeVar("RequestT", bound=RequestLike)
ResponseT = TypeVar("ResponseT", bound=ResponseLike)
InnerT = TypeVar("InnerT", bound=SyncSender)
AsyncInnerT = TypeVar("AsyncInnerT", bound=AsyncSender)


def token_cost(request: RequestLike) -> Cost:
    """One request, plus its estimated tokens when it is an LLM call: OpenAI chat completions,
    responses and embeddings `{"requests": 1, "tokens": N}`, Anthropic messages
    `{"requests": 1, "input_tokens": I, "output_tokens": O}`; any other request 1."""
    if request.method != "POST" or not request.headers.get("content-type", "").startswith("application/json"):
        return 1
    try:
        body = orjson.loads(request.content)
    except (orjson.JSONDecodeError, RuntimeError):  # RuntimeError: a streamed body, not read
        return 1
    tokens = estimate_body(request.url.path, body)
    return 1 if tokens is None else {"requests": 1.0, **tokens}


class _Attempts:
    """The last permit and network error of one logical request (for the reports and errors)."""

    __slots__ = ("error", "permit")

    def __init__(self) -> None:
        self.permit: Permit | None = None
        self.error: BaseException | None = None


class _Settings(Generic[RequestT]):
    """The transports' settings and the decisions both share."""

    _library: ClassVar[Library]
    _streams: ClassVar[UsageStreams]
    #: What counts as `network_error`: reported, and retried by the policies that retry.
    network_errors: tuple[type[BaseException], ...]

    def __init_subclass__(cls, *, library: Library | None = None, **kwargs: Any) -> None:
        """Bind a transport to `library` (the `httpx` or `httpx2` module); a subclass of a bound
        transport keeps its library."""
        super().__init_subclass__(**kwargs)
        if library is not None:
            cls._library = library
            cls._streams = usage_streams(library)
            cls.network_errors = (library.TransportError,)

    def _configure(
        self,
        *,
        hosts: Mapping[str, str] | None,
        provider: str | None,
        policy: RetryPolicy | str | None,
        bucket_headers: Mapping[str, Mapping[str, Mapping[str, str]]] | None,
        idempotency_header: str,
        cost: Cost | Callable[[RequestT], Cost],
        settle_usage: bool,
        rng: Callable[[], float],
    ) -> None:
        self.hosts = dict(hosts or {})
        self.provider = provider
        self.policy: RetryPolicy | str = ONE_ATTEMPT if policy is None else policy
        self.bucket_headers = bucket_headers or {}
        self.idempotency_header = idempotency_header
        self.cost = cost
        self.settle_usage = settle_usage
        self.rng = rng
        check_bucket_headers(self.bucket_headers)
        self._header_names = header_names(self.bucket_headers)  # once, not per request

    def provider_for(self, request: RequestT) -> str | None:
        """The provider of a request: the fixed one, else by `host:port`, else by host."""
        if self.provider is not None:
            return self.provider
        url = request.url
        return self.hosts.get(f"{url.host}:{url.port}") or self.hosts.get(url.host)

    def cost_of(self, request: RequestT) -> Cost:
        cost = self.cost
        return cost(request) if callable(cost) else cost

    def _prepare(self, request: RequestT, provider: str) -> Callable[[AttemptContext], None]:
        """A function setting the headers of each attempt: the bucket's own, the idempotency key."""
        per_bucket = self.bucket_headers.get(provider, {})
        names = self._header_names.get(provider, ())

        def prepare(ctx: AttemptContext) -> None:
            headers = request.headers
            for name in names:  # no key of another bucket may stay on a retried request
                headers.pop(name, None)
            # One update (each walks the request's headers), the idempotency key last.
            headers.update({**headers_for(provider, per_bucket, ctx.bucket), **ctx.headers})

        return prepare

    @staticmethod
    def _reads_usage(cost: Cost, response: ResponseLike) -> UsageReader | None:
        """A reader of the answer's usage when the cost estimated tokens and the body may say."""
        content_type = response.headers.get("content-type", "")
        if not reads_usage(cost, response.status_code, content_type):
            return None
        return UsageReader(content_type, response.headers.get("content-encoding", ""))

    @staticmethod
    def _error_body_wanted(response: ResponseLike) -> bool:
        if response.status_code < 400:
            return False
        length = response.headers.get("content-length")
        return length is None or (length.isdigit() and int(length) <= _MAX_ERROR_BODY)

    @staticmethod
    def _outcome(response: ResponseLike, body: bytes | None, *, report: bool = True) -> Outcome:
        reason = None
        if body is not None and "json" in response.headers.get("content-type", ""):
            reason = error_reason(body)
        return Outcome(response.status_code, response.headers, reason, report=report)

    @staticmethod
    def _exhausted(exc: RetriesExhausted, attempts: _Attempts) -> Any:
        """The last answer when the retries ran out (the caller reads its status), else the error."""
        if exc.last_result is not None:
            return exc.last_result
        if attempts.error is not None:
            raise attempts.error
        raise exc


def reads_usage(cost: Cost, status: int, content_type: str) -> bool:
    """Whether an answer's `usage` settles its grant: the cost estimated tokens, the answer is a
    success and its body a kind `UsageReader` reads."""
    return (
        isinstance(cost, Mapping)
        and any(unit in cost for unit in TOKEN_UNITS)
        and 200 <= status < 300
        and UsageReader.wanted(content_type)
    )


def used_units(permit: Permit, cost: Cost, usage: TokenUsage) -> dict[str, float] | None:
    """The token units the cost estimated and the daemon limits, as the answer counted them."""
    if not isinstance(cost, Mapping):
        return None
    told = usage.units()
    used: dict[str, float] = {
        unit: told[unit]
        for unit in TOKEN_UNITS
        if unit in cost and unit in told and unit not in permit.ignored_units
    }
    return used or None


def report_failed(exc: BaseException) -> None:
    """A report sent after the body could not be (the body was already the caller's)."""
    logger.warning("ratelimitd: the report after the body could not be sent: %s", exc)


class SyncRateLimiting(_Settings[RequestT], Generic[RequestT, ResponseT, InnerT]):
    """The blocking transport; a library's module binds it (`ratelimitd.integrations.httpx`)."""

    client: Client

    def __init__(
        self,
        client: Client,
        inner: InnerT | None = None,
        *,
        hosts: Mapping[str, str] | None = None,
        provider: str | None = None,
        policy: RetryPolicy | str | None = None,
        bucket_headers: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
        idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
        cost: Cost | Callable[[RequestT], Cost] = token_cost,
        settle_usage: bool = True,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """A blocking transport that takes a permit before each request to a known host.

        :param client: the daemon client (`ratelimitd.client.Client`).
        :param inner: the transport that sends (default the library's `HTTPTransport()`).
        :param hosts: request host (or `host:port`) -> provider; other hosts pass through untouched.
        :param provider: the provider of every request instead (one transport per API).
        :param policy: a `RetryPolicy` or preset name to retry and fail over here; None (default):
            one attempt per request, the caller's own retries (an SDK's `max_retries`) decide.
        :param bucket_headers: provider -> bucket -> headers set for that bucket, e.g. its
            `Authorization`; the daemon only ever sees bucket names. A bucket without headers
            is refused here: its requests would go out without a key.
        :param idempotency_header: the header carrying the key that stays the same on every
            attempt of one request (a key the caller already set is kept).
        :param cost: a cost, or a function of the request returning one (default `token_cost`:
            `requests` 1 plus the estimated tokens of an OpenAI or Anthropic body).
        :param settle_usage: report the tokens an answer's `usage` counted, so the daemon settles
            the estimate (only when the cost estimated tokens).
        :param rng: the source of the retries' jitter.
        """
        self.client = client
        # The library's HTTPTransport is a BaseTransport of that library: the class's InnerT.
        self.inner = inner if inner is not None else cast("InnerT", self._library.HTTPTransport())
        self._configure(
            hosts=hosts,
            provider=provider,
            policy=policy,
            bucket_headers=bucket_headers,
            idempotency_header=idempotency_header,
            cost=cost,
            settle_usage=settle_usage,
            rng=rng,
        )

    def close(self) -> None:
        self.inner.close()

    def _inner_send(self, request: RequestT) -> ResponseT:
        response: ResponseT = self.inner.handle_request(request)
        return response

    def handle_request(self, request: RequestT) -> ResponseT:
        provider = self.provider_for(request)
        if provider is None:
            return self._inner_send(request)
        cost = self.cost_of(request)
        prepare = self._prepare(request, provider)
        attempts = _Attempts()

        def send(ctx: AttemptContext) -> ResponseT:
            prepare(ctx)
            attempts.permit = ctx.permit
            try:
                return self._inner_send(request)
            except self.network_errors as exc:
                attempts.error = exc
                raise

        def describe(response: ResponseT) -> Outcome:
            permit = attempts.permit
            assert permit is not None
            reader = self._reads_usage(cost, response) if self.settle_usage else None
            if reader is not None:
                self._settle_after_body(response, reader, permit, cost)
                return self._outcome(response, None, report=False)
            body = response.read() if self._error_body_wanted(response) else None
            return self._outcome(response, body)

        try:
            return call_sync(
                self.client,
                provider,
                send,
                describe,
                policy=self.policy,
                cost=cost,
                network_errors=self.network_errors,
                idempotency_header=self.idempotency_header,
                # A key the caller (an SDK) already set is kept on every attempt.
                idempotency_key=request.headers.get(self.idempotency_header),
                rng=self.rng,
                sleep=time.sleep,
                release=lambda response: response.close(),
                wait_for_reports=False,  # the answer is never read here: one round trip less
            )
        except RetriesExhausted as exc:
            result: ResponseT = self._exhausted(exc, attempts)
            return result

    def _report_after_body(
        self, permit: Permit, status: int, headers: dict[str, str], used: dict[str, float] | None
    ) -> None:
        try:
            try:
                self.client.report_for(permit, status, headers=headers, used=used)
            except BadRequest:
                if used is None:
                    raise
                # A daemon that does not list ignored units refused one: the status still counts.
                self.client.report_for(permit, status, headers=headers)
        except (RatelimitdClientError, OSError) as exc:
            report_failed(exc)

    def _settle_after_body(
        self, response: ResponseT, reader: UsageReader, permit: Permit, cost: Cost
    ) -> None:
        """Replace the answer's stream with one that reads its usage and reports at its end."""
        inner = response.stream
        assert isinstance(inner, self._streams.sync_base)
        status, headers = response.status_code, rate_limit_headers(response.headers)

        def chunks() -> Iterator[bytes]:
            try:
                for chunk in inner:
                    reader.feed(chunk)
                    yield chunk
            finally:
                # Reached at the end of the body, or when the caller closes it early.
                self._report_after_body(permit, status, headers, used_units(permit, cost, reader.usage))

        response.stream = self._streams.sync(chunks(), inner)


class AsyncRateLimiting(_Settings[RequestT], Generic[RequestT, ResponseT, AsyncInnerT]):
    """The asyncio transport; a library's module binds it (`ratelimitd.integrations.httpx`)."""

    client: AsyncClient

    def __init__(
        self,
        client: AsyncClient,
        inner: AsyncInnerT | None = None,
        *,
        hosts: Mapping[str, str] | None = None,
        provider: str | None = None,
        policy: RetryPolicy | str | None = None,
        bucket_headers: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
        idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
        cost: Cost | Callable[[RequestT], Cost] = token_cost,
        settle_usage: bool = True,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """The blocking transport's parameters, with an `AsyncClient` of the daemon; `inner`
        defaults to the library's `AsyncHTTPTransport()` and `sleep` (the wait between
        retries) to `asyncio.sleep`."""
        self.client = client
        # The library's AsyncHTTPTransport is an AsyncBaseTransport of that library: AsyncInnerT.
        self.inner = inner if inner is not None else cast("AsyncInnerT", self._library.AsyncHTTPTransport())
        self.sleep = sleep
        self._configure(
            hosts=hosts,
            provider=provider,
            policy=policy,
            bucket_headers=bucket_headers,
            idempotency_header=idempotency_header,
            cost=cost,
            settle_usage=settle_usage,
            rng=rng,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _inner_send(self, request: RequestT) -> ResponseT:
        response: ResponseT = await self.inner.handle_async_request(request)
        return response

    async def handle_async_request(self, request: RequestT) -> ResponseT:
        provider = self.provider_for(request)
        if provider is None:
            return await self._inner_send(request)
        cost = self.cost_of(request)
        prepare = self._prepare(request, provider)
        attempts = _Attempts()
        closing: list[asyncio.Task[None]] = []

        async def send(ctx: AttemptContext) -> ResponseT:
            prepare(ctx)
            attempts.permit = ctx.permit
            try:
                return await self._inner_send(request)
            except self.network_errors as exc:
                attempts.error = exc
                raise

        async def describe(response: ResponseT) -> Outcome:
            permit = attempts.permit
            assert permit is not None
            reader = self._reads_usage(cost, response) if self.settle_usage else None
            if reader is not None:
                self._settle_after_body(response, reader, permit, cost)
                return self._outcome(response, None, report=False)
            body = await response.aread() if self._error_body_wanted(response) else None
            return self._outcome(response, body)

        async def release(response: ResponseT) -> None:
            await response.aclose()

        try:
            return await call_async(
                self.client,
                provider,
                send,
                describe,
                policy=self.policy,
                cost=cost,
                network_errors=self.network_errors,
                idempotency_header=self.idempotency_header,
                # A key the caller (an SDK) already set is kept on every attempt.
                idempotency_key=request.headers.get(self.idempotency_header),
                rng=self.rng,
                sleep=self.sleep,
                release=_closer(closing, release),
                wait_for_reports=False,  # the answer is never read here: one round trip less
            )
        except RetriesExhausted as exc:
            result: ResponseT = self._exhausted(exc, attempts)
            return result
        finally:
            for task in closing:
                await task

    async def _report_after_body(
        self, permit: Permit, status: int, headers: dict[str, str], used: dict[str, float] | None
    ) -> None:
        try:
            try:
                await self.client.report_for(permit, status, headers=headers, used=used)
            except BadRequest:
                if used is None:
                    raise
                await self.client.report_for(permit, status, headers=headers)
        except (RatelimitdClientError, OSError) as exc:
            report_failed(exc)

    def _settle_after_body(
        self, response: ResponseT, reader: UsageReader, permit: Permit, cost: Cost
    ) -> None:
        inner = response.stream
        assert isinstance(inner, self._streams.async_base)
        status, headers = response.status_code, rate_limit_headers(response.headers)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in inner:
                    reader.feed(chunk)
                    yield chunk
            finally:
                await self._report_after_body(permit, status, headers, used_units(permit, cost, reader.usage))

        response.stream = self._streams.async_(chunks(), inner)


def _closer(
    tasks: list[asyncio.Task[None]], close: Callable[[Any], Awaitable[None]]
) -> Callable[[Any], object]:
    """`release` is called without awaiting: close each retried answer in a task awaited at the end."""

    def release(response: Any) -> None:
        tasks.append(asyncio.ensure_future(close(response)))

    return release
