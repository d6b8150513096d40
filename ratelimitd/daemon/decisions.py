"""Carry a learner's decisions into a bucket's limiter and wait queue.

Shell: rescheduling the wait queue arms asyncio timers. The learner (pure) decides
a rate factor and pauses; this module makes the bucket's limiter follow them and
says what the daemon really did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ratelimitd.core.learning.learner import LearningSettings

if TYPE_CHECKING:
    from ratelimitd.core.learning.learner import BucketLearner, Decision
    from ratelimitd.core.providers import Bucket
    from ratelimitd.daemon.config import Config

__all__ = ("apply_decision", "baseline_rate", "learning_settings")


def learning_settings(config: Config, provider: str | None = None) -> LearningSettings:
    """The learner's settings: the `[learning]` table, the feature gates and, for a
    `provider`, its `retry_after_scope`."""
    scope = "auto" if provider is None else config.provider_for(provider).retry_after_scope
    return LearningSettings(
        retry_after_scope=scope,
        policy=config.learning.policy,
        learning=config.features.learning,
        recovery=config.features.recovery,
        pacing=config.features.pacing,
        max_pause=config.learning.max_pause,
        history_size=config.learning.history_size,
        allow_above_configured=config.learning.allow_above_configured,
        disable_for=config.learning.disable_for,
    )


def baseline_rate(bucket: Bucket) -> float:
    """The configured `requests` rate (else the first unit's): what the learner scales."""
    return bucket.limiter.primary.baseline


def apply_decision(bucket: Bucket, decision: Decision | None, now: float) -> str:
    """Make the limiter follow the learner, count the change, and wake the queue.

    Returns what the daemon really did (the report's `action`): in shadow mode the
    learner may decide a cut that is not applied, so this reads the limiter, not the
    decision: `reduced`/`recovered` when the rate moved, else `paused` for a new pause,
    `disabled`, or `none`. `decision=None` re-applies the learner's state (a restore or a
    reload rebuilt the limiter) without counting anything.
    """
    learner: BucketLearner = bucket.learner
    factor = learner.factor
    before = bucket.limiter.scale
    pause = learner.pause_until
    new_pause = pause is not None and pause > now and pause != bucket.applied_pause
    if factor != before:
        bucket.limiter.set_scale(factor, now)
        if pause is not None and pause > now:
            # A rescale stretches or shrinks a hold in progress: put it back at its deadline.
            bucket.limiter.release_hold(now)
            bucket.limiter.hold_until(pause)
    if new_pause and pause is not None:
        bucket.applied_pause = pause
        bucket.limiter.hold_until(pause)  # no stored burst released when it ends
    bucket.queue.reschedule()
    if decision is None:
        return "none"
    if factor < before:
        bucket.reductions += 1
        action = "reduced"
    elif factor > before:
        bucket.recoveries += 1
        action = "recovered"
    elif new_pause:
        action = "paused"
    else:
        action = "disabled" if decision.action == "disabled" else "none"
    if new_pause:
        bucket.pauses += 1  # also when the same 429 cut the rate
    return action
