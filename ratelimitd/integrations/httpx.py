"""Transports for httpx: permits, reports, settled token costs, retries and failover.

Use them with httpx and with the SDKs built on it (openai before 3, anthropic before 1).

    from ratelimitd.client import Client
    from ratelimitd.httpx import RateLimitTransport

    transport = RateLimitTransport(Client(), hosts={"api.openai.com": "openai"})
    http = httpx.Client(transport=transport)

Shell: binds `ratelimitd.integrations.httpx_base` (where the parameters are described)
to httpx. This module is `ratelimitd.integrations.httpx`; `import httpx` below is the library.
"""

from __future__ import annotations

import httpx

from ratelimitd.integrations.httpx_base import AsyncRateLimiting, SyncRateLimiting, token_cost

__all__ = ("NETWORK_ERRORS", "AsyncRateLimitTransport", "RateLimitTransport", "token_cost")


class RateLimitTransport(
    SyncRateLimiting[httpx.Request, httpx.Response, httpx.BaseTransport], httpx.BaseTransport, library=httpx
):
    """A blocking httpx transport that takes a permit before each request to a known host."""


class AsyncRateLimitTransport(
    AsyncRateLimiting[httpx.Request, httpx.Response, httpx.AsyncBaseTransport],
    httpx.AsyncBaseTransport,
    library=httpx,
):
    """`RateLimitTransport` for `httpx.AsyncClient`, with an `AsyncClient` of the daemon."""


#: What counts as `network_error`: reported, and retried by the policies that retry.
NETWORK_ERRORS = RateLimitTransport.network_errors
