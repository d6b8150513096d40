"""The requests adapter (public path; the code lives in `ratelimitd.integrations.requests`)."""

from ratelimitd.integrations.requests import NETWORK_ERRORS, RateLimitAdapter, token_cost

__all__ = ("NETWORK_ERRORS", "RateLimitAdapter", "token_cost")
