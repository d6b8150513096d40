"""Frozen snapshots of a bucket for the status op, metrics and persistence.

Pure: reads a bucket's state at `now` (monotonic) and `wall` (unix seconds).
"""

from __future__ import annotations

from ratelimitd.core.causes import NO_EVENTS
from ratelimitd.core.providers import Bucket, BucketStats, LimitStats
from ratelimitd.core.selection import bucket_availability

__all__ = ("bucket_statistics",)


def bucket_statistics(bucket: Bucket, now: float, wall: float, *, history: bool = True) -> BucketStats:
    learner = bucket.learner
    factor = bucket.limiter.scale
    shadow = factor if learner is None else float(learner.shadow_factor)
    paused_until = None
    if learner is not None and learner.pause_until is not None and learner.pause_until > now:
        paused_until = round(wall + (learner.pause_until - now), 3)
    periods = bucket.periods
    # State and why, for `status`; "rate_limited" when one request would have to wait.
    availability = bucket_availability(bucket, now, {"requests": 1.0})
    available_in = availability.delay if availability.delay != float("inf") else None
    limits = {
        unit: LimitStats(
            rate=limit.rate,
            baseline=limit.baseline,
            period=periods.get(unit, 1.0),
            burst=limit.burst,
            shadow_rate=limit.baseline * shadow,
        )
        for unit, limit in bucket.limiter.units.items()
    }
    return BucketStats(
        limits=limits,
        streak=0 if learner is None else int(learner.streak),
        state=availability.state,
        paused_until=paused_until,
        granted=bucket.granted,
        timeouts=bucket.timeouts,
        reports=dict(bucket.reports),
        waiters=0 if bucket.queue is None else bucket.queue.live,
        factor=factor,
        shadow_factor=shadow,
        ceiling=None if learner is None else learner.ceiling,
        reductions=bucket.reductions,
        recoveries=bucket.recoveries,
        pauses=bucket.pauses,
        malformed_headers=bucket.malformed_headers,
        suspicious_headers=bucket.suspicious_headers,
        history=[entry.as_dict(now, wall) for entry in learner.history] if history and learner else [],
        why=availability.reason,
        available_in=None if available_in is None else round(available_in, 3),
        events=NO_EVENTS if bucket.events is None else bucket.events.stats(now, wall),
        fill=_fill(bucket, now),
        retry_after_scope=None if learner is None else learner.retry_after_scope.describe(),
    )


def _fill(bucket: Bucket, now: float) -> float:
    """Share of the primary unit's burst available now (0 when in debt or held)."""
    primary = bucket.limiter.primary
    return max(0.0, min(1.0, primary.available(now) / primary.burst)) if primary.burst > 0 else 0.0
