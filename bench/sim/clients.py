"""Client-side limiters the simulation drives: the daemon's real core, and botocore's adaptive one.

Each exposes `delay(now)` (0.0 = a permit is taken now, else seconds to wait), `granted(now)`
(-> permit id or None), `report(answer, permit, now)`, `tick(now)` and `allowed_rate(now)`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from botocore.exceptions import CapacityNotAvailableError
from botocore.retries.adaptive import ClientRateLimiter, RateClocker
from botocore.retries.bucket import TokenBucket
from botocore.retries.throttling import CubicCalculator

from ratelimitd.core.learning.learner import BucketLearner, LearningSettings, ReportEvent
from ratelimitd.core.limiter import BucketLimiter, LimitSpec

if TYPE_CHECKING:
    from bench.sim.provider import Answer

__all__ = ("BotoClient", "DaemonClient", "VirtualClock")

_COST = {"requests": 1.0}


class VirtualClock:
    """botocore's clock interface (`current_time`, `sleep`) over the simulation's time."""

    def __init__(self) -> None:
        self.now = 0.0

    def current_time(self) -> float:
        return self.now

    def sleep(self, amount: float) -> None:  # never called: we acquire with block=False
        raise AssertionError("the simulation never blocks")


class DaemonClient:
    """What the daemon does per bucket: the real `BucketLimiter` steered by a `BucketLearner`."""

    def __init__(
        self, settings: LearningSettings, configured: float, burst: float, *, hold: bool = True
    ) -> None:
        self.configured = configured
        self.honours_retry_after = settings.honour_retry_after
        self.hold = hold  # False: a pause blocks sends but the limiter keeps filling (seed)
        self.limiter = BucketLimiter({"requests": LimitSpec(configured, burst)}, 0.0)
        self.learner = BucketLearner(settings, configured, 0.0)
        self._applied_factor = 1.0
        self._applied_pause: float | None = None

    def delay(self, now: float) -> float:
        pause = self.learner.pause_until
        if not self.hold and pause is not None and pause > now:
            return pause - now
        return self.limiter.try_take(_COST, now)

    def granted(self, now: float) -> int | None:
        return self.learner.on_grant(now)

    def report(self, answer: Answer, permit: int | None, now: float) -> None:
        event = ReportEvent(
            status=answer.status,
            permit=permit,
            retry_after=answer.retry_after,
            hint=answer.hint,
        )
        self.learner.on_report(event, now)
        self._apply(now)

    def tick(self, now: float) -> None:
        if self.learner.tick(now) is not None:
            self._apply(now)

    def _apply(self, now: float) -> None:
        factor = self.learner.factor
        if factor != self._applied_factor:
            self.limiter.set_scale(factor, now)
            self._applied_factor = factor
            self._applied_pause = None  # set_scale rescales the hold: set it again
        pause = self.learner.pause_until
        if self.hold and pause is not None and pause > now and pause != self._applied_pause:
            self.limiter.hold_until(pause)
            self._applied_pause = pause

    def allowed_rate(self, now: float) -> float:
        pause = self.learner.pause_until
        if pause is not None and pause > now:
            return 0.0
        return self.configured * self.learner.factor

    def learned_rate(self, now: float) -> float | None:
        """The rate the learner enforces (factor × configured); None while a pause holds."""
        pause = self.learner.pause_until
        if pause is not None and pause > now:
            return None
        return self.configured * self.learner.factor


class _Detector:
    def is_throttling_error(self, **kwargs: Any) -> bool:
        return bool(kwargs["throttled"])


class BotoClient:
    """botocore's `ClientRateLimiter` (adaptive retry mode, CUBIC) on the virtual clock."""

    honours_retry_after = False  # botocore's retries ignore Retry-After

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.bucket = TokenBucket(max_rate=1, clock=clock)
        self.limiter = ClientRateLimiter(
            rate_adjustor=CubicCalculator(starting_max_rate=0, start_time=clock.now),
            rate_clocker=RateClocker(clock),
            token_bucket=self.bucket,
            throttling_detector=_Detector(),
            clock=clock,
        )

    def delay(self, now: float) -> float:
        self.clock.now = now
        if not self.limiter._enabled:  # botocore sends unlimited until the first throttle
            return 0.0
        try:
            self.bucket.acquire(amount=1, block=False)  # what on_sending_request does, non-blocking
        except CapacityNotAvailableError:
            missing = 1.0 - float(self.bucket.available_capacity)
            return max(1e-6, missing / float(self.bucket.max_rate))
        return 0.0

    def granted(self, now: float) -> int | None:
        return None

    def report(self, answer: Answer, permit: int | None, now: float) -> None:
        self.clock.now = now
        self.limiter.on_receiving_response(throttled=answer.status == 429)

    def tick(self, now: float) -> None:
        return None

    def allowed_rate(self, now: float) -> float:
        if not self.limiter._enabled:
            return math.inf
        return float(self.bucket.max_rate)

    def learned_rate(self, now: float) -> float | None:
        """`ClientRateLimiter`'s current send rate (it never pauses; unlimited before a 429)."""
        return self.allowed_rate(now)
