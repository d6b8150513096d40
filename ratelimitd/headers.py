"""Rate-limit response headers -> one typed hint. (Being written: see issue 6.)"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("RateLimitHint",)


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitHint:
    """What a provider's response headers said, normalised.

    Times are relative seconds from when the response was received (the shell
    converts HTTP-dates and epoch resets with the wall clock it passes in).
    """

    retry_after: float | None = None
    limit: float | None = None
    remaining: float | None = None
    reset_after: float | None = None
    window: float | None = None
    unit: str = "requests"
    malformed: int = 0
