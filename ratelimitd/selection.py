"""Which bucket (API key) of a provider serves an acquire.

Pure: reads the buckets' limiters and states at `now`. Strategies: `failover`
(the first bucket in configured order that can serve), `round_robin` (rotate the
starting point), `most_headroom` (the bucket with the most room left).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ratelimitd.errors import ErrorCode, RatelimitdError

if TYPE_CHECKING:
    from ratelimitd.protocol import AcquireRequest
    from ratelimitd.providers import Bucket, Provider

__all__ = ("UNAVAILABLE_STATES", "bucket_state", "choose_bucket")

# A bucket in one of these states serves nobody until it changes (issue 7).
UNAVAILABLE_STATES = {"exhausted": "quota_exhausted", "disabled": "auth_failed"}


def bucket_state(bucket: Bucket, now: float) -> str:
    learner = bucket.learner
    return "ok" if learner is None else str(learner.state(now))


def _headroom(bucket: Bucket, now: float) -> float:
    """The smallest fraction of burst left over the bucket's units."""
    return min(limit.available(now) / limit.burst for limit in bucket.limiter.units.values())


def choose_bucket(provider: Provider, request: AcquireRequest, now: float) -> Bucket:
    """The bucket to queue on, or `all_buckets_exhausted` with a reason per bucket."""
    buckets = provider.buckets
    if len(buckets) == 1 and not request.exclude:
        (only,) = buckets.values()
        if only.learner is None or bucket_state(only, now) not in UNAVAILABLE_STATES:
            return only
    reasons: dict[str, str] = {}
    candidates: list[Bucket] = []
    order = list(buckets.values())
    if provider.config.selection == "round_robin" and order:
        start = provider.rotation % len(order)
        order = order[start:] + order[:start]
    for bucket in order:
        if bucket.name in request.exclude:
            reasons[bucket.name] = "excluded"
            continue
        state = bucket_state(bucket, now)
        if state in UNAVAILABLE_STATES:
            reasons[bucket.name] = UNAVAILABLE_STATES[state]
            continue
        candidates.append(bucket)
    if not candidates:
        fields: dict[str, Any] = {"reasons": reasons}
        retry_after = _earliest_return(provider, request, now)
        if retry_after is not None:
            fields["retry_after"] = retry_after
        raise RatelimitdError(
            ErrorCode.ALL_BUCKETS_EXHAUSTED,
            f"provider {provider.name!r}: no bucket can serve ("
            + ", ".join(f"{name}: {why}" for name, why in reasons.items())
            + ")",
            **fields,
        )
    if provider.config.selection == "most_headroom":
        return max(candidates, key=lambda b: (-b.queue.estimate(request.cost, now), _headroom(b, now)))
    best = min(candidates, key=lambda b: b.queue.estimate(request.cost, now))
    for bucket in candidates:
        if bucket.queue.estimate(request.cost, now) == 0.0:
            best = bucket
            break
    if provider.config.selection == "round_robin":
        provider.rotation = (order.index(best) + provider.rotation + 1) % len(buckets)
    return best


def _earliest_return(provider: Provider, request: AcquireRequest, now: float) -> float | None:
    """Seconds until the first unavailable, non-excluded bucket comes back, when known."""
    times = []
    for bucket in provider.buckets.values():
        if bucket.name in request.exclude or bucket.learner is None:
            continue
        until = bucket.learner.available_at(now)
        if until is not None:
            times.append(max(0.0, until - now))
    return min(times) if times else None
