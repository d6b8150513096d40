"""Transports for httpx2: permits, reports, settled token costs, retries and failover.

httpx2 is the fork of httpx that the OpenAI SDK from 3.0 and the Anthropic SDK from
1.0 are built on; give the SDK an `httpx2.Client` with the transport:

    import openai
    from ratelimitd.client import Client
    from ratelimitd.httpx2 import RateLimitTransport

    transport = RateLimitTransport(Client(), provider="openai")
    llm = openai.OpenAI(http_client=httpx2.Client(transport=transport))

Shell: binds `ratelimitd.integrations.httpx_base` (where the parameters are described)
to httpx2; `import httpx2` below is the library itself.
"""

from __future__ import annotations

import httpx2

from ratelimitd.integrations.httpx_base import AsyncRateLimiting, SyncRateLimiting, token_cost

__all__ = ("NETWORK_ERRORS", "AsyncRateLimitTransport", "RateLimitTransport", "token_cost")


class RateLimitTransport(
    SyncRateLimiting[httpx2.Request, httpx2.Response, httpx2.BaseTransport],
    httpx2.BaseTransport,
    library=httpx2,
):
    """A blocking httpx2 transport that takes a permit before each request to a known host."""


class AsyncRateLimitTransport(
    AsyncRateLimiting[httpx2.Request, httpx2.Response, httpx2.AsyncBaseTransport],
    httpx2.AsyncBaseTransport,
    library=httpx2,
):
    """`RateLimitTransport` for `httpx2.AsyncClient`, with an `AsyncClient` of the daemon."""


#: What counts as `network_error`: reported, and retried by the policies that retry.
NETWORK_ERRORS = RateLimitTransport.network_errors
