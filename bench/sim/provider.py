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

__all__ = ("Answer", "HiddenProvider", "Hiccups")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: float | None
    hint: RateLimitHint | None
    latency: float


@dataclass(frozen=True, slots=True)
class Hiccups:
    """Clustered load-unrelated 429s: episodes of `length` s where `share` of answers are 429,
    starting on average every `every` s (exponential gaps): an upstream that hiccups."""

    every: float
    length: float
    share: float

    def schedule(self, rng: random.Random, horizon: float = 3600.0) -> list[tuple[float, float, float]]:
        episodes: list[tuple[float, float, float]] = []
        t = rng.expovariate(1.0 / self.every)
        while t < horizon:
            episodes.append((t, t + self.length, self.share))
            t += self.length + rng.expovariate(1.0 / self.every)
        return episodes


class HiddenProvider:
    """Capacity `steps` [(from_time, rate)], bucket of `burst_seconds` × rate.

    By default a 429 costs nothing: only admitted requests take a token (the default model;
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
        noise_retry_after: float | None = None,
        hiccups: Hiccups | None = None,
    ) -> None:
        self.charge_rejected = charge_rejected
        self.noise_retry_after = noise_retry_after
        self._hiccups = hiccups.schedule(rng) if hiccups is not None else []
        self.steps = list(steps)
        self.rng = rng
        self.burst_seconds = burst_seconds
        self.noise = noise
        self.headers = headers
        self.success_latency = success_latency
        self.limited_latency = limited_latency
        self._tokens = self.capacity(0.0) * burst_seconds
        self._updated = 0.0

    def _hiccup_share(self, t: float) -> float:
        """The noise share at `t`: `self.noise` outside hiccups, the hiccup's share inside."""
        episodes = self._hiccups
        while episodes and episodes[0][1] <= t:
            episodes.pop(0)
        if episodes and episodes[0][0] <= t:
            return episodes[0][2]
        return self.noise

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
        share = self.noise if not self._hiccups else self._hiccup_share(t)
        if share and self.rng.random() < share:
            # Load-unrelated 429s (a flaky shared upstream), with or without a Retry-After.
            return Answer(429, self.noise_retry_after, None, self.limited_latency * jitter)
        return Answer(200, None, hint, self.success_latency * jitter)
