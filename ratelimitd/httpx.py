"""Transports for httpx (public path; the code lives in `ratelimitd.integrations.httpx`)."""

from ratelimitd.integrations.httpx import (
    NETWORK_ERRORS,
    AsyncRateLimitTransport,
    RateLimitTransport,
    token_cost,
)

__all__ = ("NETWORK_ERRORS", "AsyncRateLimitTransport", "RateLimitTransport", "token_cost")
