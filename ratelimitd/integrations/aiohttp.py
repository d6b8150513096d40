"""aiohttp integration: a client middleware that takes a permit before each request.

Shell: for a request whose host maps to a provider (or whose middleware names one),
it acquires a permit, sets the chosen bucket's headers (its API key) and the
idempotency key, sends, reports the status and rate-limit headers, and retries per
the policy with failover across buckets (`ratelimitd.client.retry_calls.call_async`).

    limits = RateLimitMiddleware(client=client, hosts={"api.example.com": "api"})
    session = aiohttp.ClientSession(middlewares=[limits])

This module is `ratelimitd.integrations.aiohttp`; `import aiohttp` below is the real aiohttp
(absolute imports; the package directory is never on `sys.path`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import TYPE_CHECKING

import aiohttp

from ratelimitd.client.retry import DEFAULT_IDEMPOTENCY_HEADER, RetryPolicy
from ratelimitd.client.retry_calls import AttemptContext, Outcome, call_async, error_reason
from ratelimitd.integrations.bucket_headers import check_bucket_headers, headers_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

    from ratelimitd.client.async_client import AsyncClient
    from ratelimitd.client.types import Cost

__all__ = ("NETWORK_ERRORS", "RateLimitMiddleware")

# What counts as `network_error` (reported, and retried by the default policies).
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)
_MAX_ERROR_BODY = 65536  # bytes of an error body read for its error code


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitMiddleware:
    """An aiohttp client middleware: permits, reports, retries and failover.

    :param client: the daemon client shared by the session's tasks.
    :param hosts: request host (or `host:port`) -> provider; other hosts pass through untouched.
    :param provider: the provider of every request (for a per-request middleware, see `for_provider`).
    :param policy: a `RetryPolicy` or a preset name (`download`, `validate`, `resolve`, `extract`,
        `manifest_fetch`).
    :param bucket_headers: provider -> bucket -> headers to set for that bucket, e.g. its
        `Authorization`; the daemon only ever sees bucket names. A bucket given no headers is
        refused here, and a granted bucket the map does not name raises `MissingBucketHeaders`
        instead of sending the request without a key.
    :param idempotency_header: the header carrying the key shared by every attempt.
    :param cost: the cost of one request (a number of `requests`, or units -> amounts).
    :param read_error_bodies: read a JSON error body (up to 64 KiB) for the provider's error code,
        which tells a spent quota from a rate limit; the body stays readable.
    :param rng: random floats in [0, 1) for the jitter; `sleep`: the wait between attempts.
    """

    client: AsyncClient
    hosts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    provider: str | None = None
    policy: RetryPolicy | str = "extract"
    bucket_headers: Mapping[str, Mapping[str, Mapping[str, str]]] = dataclasses.field(default_factory=dict)
    idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER
    cost: Cost = 1
    read_error_bodies: bool = True
    rng: Callable[[], float] = random.random
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        check_bucket_headers(self.bucket_headers)

    def for_provider(self, provider: str, *, policy: RetryPolicy | str | None = None) -> RateLimitMiddleware:
        """The same middleware for one provider (and policy), to pass as a request's `middlewares`."""
        return dataclasses.replace(self, provider=provider, policy=self.policy if policy is None else policy)

    def provider_for(self, request: ClientRequest) -> str | None:
        """The provider of a request: the fixed one, else by `host:port`, else by host."""
        if self.provider is not None:
            return self.provider
        url = request.url
        return self.hosts.get(f"{url.host}:{url.port}") or self.hosts.get(url.host or "")

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        provider = self.provider_for(request)
        if provider is None:
            return await handler(request)
        per_bucket = self.bucket_headers.get(provider, {})
        # Header names any bucket sets: cleared before each attempt so no key leaks to another bucket.
        bucket_names = {name for headers in per_bucket.values() for name in headers}

        async def send(ctx: AttemptContext) -> ClientResponse:
            for name in bucket_names:
                request.headers.popall(name, None)
            request.headers.update(headers_for(provider, per_bucket, ctx.bucket))
            request.headers.update(ctx.headers)
            return await handler(request)

        return await call_async(
            self.client,
            provider,
            send,
            self._describe,
            policy=self.policy,
            cost=self.cost,
            network_errors=NETWORK_ERRORS,
            idempotency_header=self.idempotency_header,
            rng=self.rng,
            sleep=self.sleep,
            release=_release,
        )

    async def _describe(self, response: ClientResponse) -> Outcome:
        reason = None
        length = response.content_length
        if (
            self.read_error_bodies
            and response.status >= 400
            and response.content_type == "application/json"
            and (length is None or length <= _MAX_ERROR_BODY)
        ):
            reason = error_reason(await response.read())  # cached: the caller can read it again
        return Outcome(response.status, dict(response.headers.items()), reason)


def _release(response: ClientResponse) -> None:
    response.release()
