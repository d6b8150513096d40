"""The aiohttp client middleware (public path; the code lives in `ratelimitd.integrations.aiohttp`)."""

from ratelimitd.integrations.aiohttp import NETWORK_ERRORS, RateLimitMiddleware

__all__ = ("NETWORK_ERRORS", "RateLimitMiddleware")
