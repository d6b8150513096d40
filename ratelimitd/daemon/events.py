"""What learning did to a bucket, counted by cause and logged: one info line per event.

Shell: logs through `logging` with an `event` kind (cut, recovery, pause, quota, disabled,
reset), which the log set-up limits per kind so a 429 storm cannot flood the journal.
The counts live on the bucket (`core.causes.BucketEvents`) for metrics and status views.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ratelimitd.core.causes import BucketEvents, Cause, cause_of
from ratelimitd.core.rates import format_rate

if TYPE_CHECKING:
    from ratelimitd.core.headers.parse import RateLimitHint
    from ratelimitd.core.learning.learner import Decision
    from ratelimitd.core.providers import Bucket

__all__ = ("bucket_events", "note_429", "note_decision", "note_reset", "pause_cause")

logger = logging.getLogger(__name__)


def bucket_events(bucket: Bucket) -> BucketEvents:
    """The bucket's event record, made on first use."""
    events: BucketEvents | None = bucket.events
    if events is None:
        events = bucket.events = BucketEvents()
    return events


def pause_cause(status: int | None, retry_after: float | None, hint: RateLimitHint | None) -> Cause | None:
    """Why a report would pause a bucket, read from the report itself (None: ask the decision)."""
    if retry_after or (hint is not None and hint.retry_after):
        return "retry_after"
    if status in (503, 529):
        return "overload"
    if hint is not None and hint.remaining is not None and hint.remaining <= 0:
        return "pacing"
    return None


def note_429(bucket: Bucket, now: float) -> None:
    """A 429 was reported (the status views show its age)."""
    bucket_events(bucket).last_429_at = now


def note_decision(
    bucket: Bucket,
    decision: Decision,
    *,
    factor_before: float,
    pause_before: float | None,
    now: float,
    pause_cause: Cause | None = None,
) -> None:
    """Count and log what applying `decision` changed (the limiter has already followed it).

    `pause_cause` says why a pause began when the report shows it (a Retry-After, a 503,
    remaining 0): one 429 may both cut the rate and pause, and the reason names the cut.
    """
    factor = bucket.limiter.scale
    pause = bucket.applied_pause
    new_pause = pause is not None and pause > now and pause != pause_before
    state = decision.state
    events: BucketEvents | None = bucket.events
    state_before = "ok" if events is None else events.state
    if factor == factor_before and not new_pause and state == state_before:
        return
    cause = cause_of(decision.reason, state=state)
    events = bucket_events(bucket)
    events.state = state
    if factor != factor_before:
        direction = "down" if factor < factor_before else "up"
        # While paused, spent or disabled, that is the bucket's "why", not a climb meanwhile.
        held = state in ("paused", "exhausted", "disabled") and direction == "up"
        events.changed(direction, cause, now, note=not held)
        _log(bucket, "cut" if direction == "down" else "recovery", cause, decision.reason, state)
    if new_pause and pause is not None:
        running = pause_before is not None and pause_before > now
        if running:
            events.extend_pause(pause, now)
        else:
            why = pause_cause or cause
            events.paused(why, pause, now)
            detail = decision.reason if why == cause else ""
            _log(bucket, "pause", why, detail, state, seconds=pause - now)
    if state != state_before and state in ("exhausted", "disabled"):
        events.noted(cause, now)
        _log(bucket, "quota" if state == "exhausted" else "disabled", cause, decision.reason, state)


def note_reset(bucket: Bucket, *, factor_before: float, now: float) -> None:
    """An operator's `reset` put the bucket back at its configured rate."""
    events = bucket_events(bucket)
    events.resets += 1
    events.state = "ok"
    events.end_pause(now)
    if bucket.limiter.scale > factor_before:
        events.changed("up", "reset", now)
    else:
        events.noted("reset", now)


_WHAT = {
    "cut": "rate cut to %s",
    "recovery": "rate raised to %s",
    "pause": "paused for %.3g s at %s",
    "quota": "quota spent, out of rotation (rate %s)",
    "disabled": "key disabled, out of rotation (rate %s)",
}


def _log(
    bucket: Bucket, kind: str, cause: Cause, detail: str, state: str, seconds: float | None = None
) -> None:
    primary = bucket.limiter.primary
    unit = next((name for name, limit in bucket.limiter.units.items() if limit is primary), "requests")
    rate = format_rate(primary.rate, bucket.periods.get(unit))
    what = _WHAT[kind] % ((seconds, rate) if seconds is not None else (rate,))
    logger.info(
        "%s/%s: %s; %s%s",
        bucket.provider,
        bucket.name,
        what,
        cause,
        f": {detail}" if detail else "",
        extra={
            "event": kind,
            "provider": bucket.provider,
            "bucket": bucket.name,
            "reason": cause,
            "rate": primary.rate,
            "state": state,
        },
    )
