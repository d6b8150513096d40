"""Transports for httpx2 (public path; the code lives in `ratelimitd.integrations.httpx2`)."""

from ratelimitd.integrations.httpx2 import (
    NETWORK_ERRORS,
    AsyncRateLimitTransport,
    RateLimitTransport,
    token_cost,
)

__all__ = ("NETWORK_ERRORS", "AsyncRateLimitTransport", "RateLimitTransport", "token_cost")
