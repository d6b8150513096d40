"""The simulated provider: a hidden token bucket that answers 429 with a whole-second Retry-After.

Virtual time only; deterministic given its `random.Random`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ratelimitd.core.headers.parse import RateLimitHint

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

__all__ = ("Answer", "HiddenProvider")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: float | None
    hint: RateLimitHint | None
    latency: float


class HiddenProvider:
    """Capacity `steps` [(from_time, rate)], bucket of `burst_seconds` × rate.

    By default a 429 costs nothing: only admitted requests take a token (the issue's model;
    most token-bucket gateways work this way). With `charge_rejected` every attempt takes a
    token, rejected ones too (as OpenAI documents: "unsuccessful requests contribute to your
    per-minute limit"), so a client that keeps sending faster than the limit is locked out
    until it slows down or pauses.
    """

    def __init__(
        self,
        steps: Sequence[tuple[float, float]],
        rng: random.Random,
        *,
        burst_seconds: float = 0.25,
        noise: float = 0.0,
        headers: bool = False,
        success_latency: float = 0.3,
        limited_latency: float = 0.05,
        charge_rejected: bool = False,
    ) -> None:
        self.charge_rejected = charge_rejected
        self.steps = list(steps)
        self.rng = rng
        self.burst_seconds = burst_seconds
        self.noise = noise
        self.headers = headers
        self.success_latency = success_latency
        self.limited_latency = limited_latency
        self._tokens = self.capacity(0.0) * burst_seconds
        self._updated = 0.0

    def capacity(self, t: float) -> float:
        rate = self.steps[0][1]
        for start, value in self.steps:
            if t >= start:
                rate = value
        return rate

    def capacity_integral(self, end: float) -> float:
        total = 0.0
        for i, (start, rate) in enumerate(self.steps):
            stop = self.steps[i + 1][0] if i + 1 < len(self.steps) else end
            total += rate * max(0.0, min(stop, end) - start)
        return total

    def change_times(self) -> list[float]:
        return [start for start, _ in self.steps]

    def attempt(self, t: float) -> Answer:
        rate = self.capacity(t)
        burst = rate * self.burst_seconds
        self._tokens = min(burst, self._tokens + (t - self._updated) * rate)
        self._updated = t
        allowed = self._tokens >= 1.0
        if allowed or self.charge_rejected:
            self._tokens = max(0.0, self._tokens - 1.0)
        jitter = self.rng.uniform(0.8, 1.2)
        hint = None
        if self.headers:
            hint = RateLimitHint(
                limit=burst,
                window=self.burst_seconds,
                remaining=math.floor(self._tokens),
                reset_after=(burst - self._tokens) / rate,
            )
        if not allowed:
            retry_after = float(max(1, math.ceil((1.0 - self._tokens) / rate)))
            return Answer(429, retry_after, hint, self.limited_latency * jitter)
        if self.noise and self.rng.random() < self.noise:
            # Load-unrelated 429s (a flaky shared upstream) carry no Retry-After.
            return Answer(429, None, None, self.limited_latency * jitter)
        return Answer(200, None, hint, self.success_latency * jitter)
