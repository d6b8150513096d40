"""Transports for httpx2: permits, reports, settled token costs, retries and failover.

Shell: binds `ratelimitd.integrations.httpx_base` to httpx2's transport and stream classes.
Use it with httpx2 and with the SDKs built on it (openai 3 and later, anthropic 1 and later).

    from ratelimitd.client import Client
    from ratelimitd.httpx2 import RateLimitTransport

    transport = RateLimitTransport(Client(), hosts={"api.openai.com": "openai"})
    http = httpx2.Client(transport=transport)

This module is `ratelimitd.integrations.httpx2`; `import httpx2` below is the library itself.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import httpx2

from ratelimitd.client.retry import DEFAULT_IDEMPOTENCY_HEADER
from ratelimitd.integrations.httpx_base import AsyncRateLimiting, SyncRateLimiting, token_cost

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

    from ratelimitd.client.async_client import AsyncClient
    from ratelimitd.client.retry import RetryPolicy
    from ratelimitd.client.sync import Client
    from ratelimitd.client.types import Cost

__all__ = ("NETWORK_ERRORS", "AsyncRateLimitTransport", "RateLimitTransport", "token_cost")

#: What counts as `network_error`: reported, and retried by the policies that retry.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (httpx2.TransportError,)


class _SyncUsageStream(httpx2.SyncByteStream):
    """The body as it passes, through the reader of its usage; closing it sends the report."""

    def __init__(self, chunks: Iterator[bytes], inner: httpx2.SyncByteStream) -> None:
        self._chunks = chunks
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._inner.close()


class _AsyncUsageStream(httpx2.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes], inner: httpx2.AsyncByteStream) -> None:
        self._chunks = chunks
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._inner.aclose()


class RateLimitTransport(SyncRateLimiting[httpx2.Request, httpx2.Response], httpx2.BaseTransport):
    """A blocking httpx2 transport that takes a permit before each request to a known host.

    :param client: the daemon client (`ratelimitd.client.Client`).
    :param inner: the transport that sends (default `httpx2.HTTPTransport()`).
    :param hosts: request host (or `host:port`) -> provider; other hosts pass through untouched.
    :param provider: the provider of every request instead (one transport per API).
    :param policy: a `RetryPolicy` or preset name to retry and fail over here; None (default):
        one attempt per request, the caller's own retries (an SDK's `max_retries`) decide.
    :param bucket_headers: provider -> bucket -> headers set for that bucket, e.g. its
        `Authorization`; the daemon only ever sees bucket names. A bucket without headers
        is refused here: its requests would go out without a key.
    :param cost: a cost, or a function of the request returning one (default `token_cost`:
        `requests` 1 plus the estimated tokens of an OpenAI or Anthropic body).
    :param settle_usage: report the tokens an answer's `usage` counted, so the daemon settles
        the estimate (only when the cost estimated tokens).
    """

    def __init__(
        self,
        client: Client,
        inner: httpx2.BaseTransport | None = None,
        *,
        hosts: Mapping[str, str] | None = None,
        provider: str | None = None,
        policy: RetryPolicy | str | None = None,
        bucket_headers: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
        idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
        cost: Cost | Callable[[httpx2.Request], Cost] = token_cost,
        settle_usage: bool = True,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.inner = inner if inner is not None else httpx2.HTTPTransport()
        self.network_errors = NETWORK_ERRORS
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

    def _inner_send(self, request: httpx2.Request) -> httpx2.Response:
        return self.inner.handle_request(request)

    def _wrap_stream(self, response: httpx2.Response, chunks: Callable[[], Iterator[bytes]]) -> None:
        inner = response.stream
        assert isinstance(inner, httpx2.SyncByteStream)
        response.stream = _SyncUsageStream(chunks(), inner)

    def _raw_chunks(self, response: httpx2.Response) -> Iterator[bytes]:
        stream = response.stream
        assert isinstance(stream, httpx2.SyncByteStream)
        return iter(stream)

    def _read(self, response: httpx2.Response) -> bytes:
        return response.read()

    def _close_response(self, response: httpx2.Response) -> None:
        response.close()

    def close(self) -> None:
        self.inner.close()


class AsyncRateLimitTransport(AsyncRateLimiting[httpx2.Request, httpx2.Response], httpx2.AsyncBaseTransport):
    """`RateLimitTransport` for `httpx2.AsyncClient`, with an `AsyncClient` of the daemon.

    Same parameters; `inner` defaults to `httpx2.AsyncHTTPTransport()` and `sleep` (the wait
    between retries) to `asyncio.sleep`.
    """

    def __init__(
        self,
        client: AsyncClient,
        inner: httpx2.AsyncBaseTransport | None = None,
        *,
        hosts: Mapping[str, str] | None = None,
        provider: str | None = None,
        policy: RetryPolicy | str | None = None,
        bucket_headers: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
        idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
        cost: Cost | Callable[[httpx2.Request], Cost] = token_cost,
        settle_usage: bool = True,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.inner = inner if inner is not None else httpx2.AsyncHTTPTransport()
        self.network_errors = NETWORK_ERRORS
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

    async def _inner_send(self, request: httpx2.Request) -> httpx2.Response:
        return await self.inner.handle_async_request(request)

    def _wrap_stream(self, response: httpx2.Response, chunks: Callable[[], AsyncIterator[bytes]]) -> None:
        inner = response.stream
        assert isinstance(inner, httpx2.AsyncByteStream)
        response.stream = _AsyncUsageStream(chunks(), inner)

    def _raw_chunks(self, response: httpx2.Response) -> AsyncIterator[bytes]:
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        return aiter(stream)

    async def _read(self, response: httpx2.Response) -> bytes:
        return await response.aread()

    async def _close_response(self, response: httpx2.Response) -> None:
        await response.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()
