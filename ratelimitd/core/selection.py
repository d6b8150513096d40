"""Which bucket (API key) of a provider serves an acquire, and why the others cannot.

Pure: reads the buckets' limiters, queues and learner states at `now`; never a clock.
Strategies: `failover` (the first bucket in configured order that can serve now),
`round_robin` (the same, from a starting point that moves past each choice) and
`most_headroom` (the bucket whose limits have the most room left). When no bucket
can serve now, the one that can serve soonest within the timeout is queued on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ratelimitd.core.errors import ErrorCode, RatelimitdError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.core.protocol import AcquireRequest
    from ratelimitd.core.providers import Bucket, Provider

__all__ = (
    "REASONS",
    "REASON_AUTH_FAILED",
    "REASON_EXCLUDED",
    "REASON_PAUSED",
    "REASON_QUOTA_EXHAUSTED",
    "REASON_RATE_LIMITED",
    "UNAVAILABLE_STATES",
    "Availability",
    "bucket_availability",
    "bucket_state",
    "choose_bucket",
)

# Reason codes of `all_buckets_exhausted.reasons` (docs/protocol.md, error codes).
REASON_RATE_LIMITED: Final = "rate_limited"  # its limits cannot grant the cost within the timeout
REASON_PAUSED: Final = "paused"  # a Retry-After (or overload pause) holds it
REASON_QUOTA_EXHAUSTED: Final = "quota_exhausted"  # remaining 0 until a distant reset
REASON_AUTH_FAILED: Final = "auth_failed"  # disabled after 401/403 until `reset` or a set time
REASON_EXCLUDED: Final = "excluded"  # already tried by this logical request
REASONS: Final = (
    REASON_RATE_LIMITED,
    REASON_PAUSED,
    REASON_QUOTA_EXHAUSTED,
    REASON_AUTH_FAILED,
    REASON_EXCLUDED,
)

# A bucket in one of these learner states serves nobody until it changes, whatever the timeout.
UNAVAILABLE_STATES: Final = {"exhausted": REASON_QUOTA_EXHAUSTED, "disabled": REASON_AUTH_FAILED}


@dataclass(frozen=True, slots=True)
class Availability:
    """What one bucket can do for a cost at `now`.

    `delay` is the seconds until it could grant (0.0: now; `math.inf`: not known, e.g.
    disabled until `reset`). `reason` is None for a bucket that can serve now, else the
    reason code it would get in `all_buckets_exhausted` if nothing better turns up.
    `blocked` buckets (excluded, auth_failed, quota_exhausted) are never queued on.
    """

    state: str
    delay: float
    reason: str | None
    blocked: bool


def bucket_state(bucket: Bucket, now: float) -> str:
    """The learner's state (`ok`, `paused`, `cooling_down`, `exhausted`, `disabled`)."""
    learner = bucket.learner
    return "ok" if learner is None else str(learner.state(now))


def _until(deadline: float | None, now: float) -> float:
    """Seconds from `now` to a monotonic deadline (inf when there is none)."""
    return math.inf if deadline is None else max(0.0, deadline - now)


def bucket_availability(
    bucket: Bucket, now: float, cost: Mapping[str, float] | None = None, *, excluded: bool = False
) -> Availability:
    """Whether `bucket` can grant `cost` and when (no cost: its state and any pause only)."""
    state = bucket_state(bucket, now)
    learner = bucket.learner
    if excluded:
        return Availability(state, math.inf, REASON_EXCLUDED, blocked=True)
    if state == "disabled":
        return Availability(state, _until(learner.disabled_until, now), REASON_AUTH_FAILED, blocked=True)
    if state == "exhausted":
        return Availability(state, _until(learner.exhausted_until, now), REASON_QUOTA_EXHAUSTED, blocked=True)
    wanted: Mapping[str, float] = cost if cost is not None else {}
    # The queue adds what is already waiting (FIFO); a bucket without the shell has none.
    queue = bucket.queue
    delay = float(queue.estimate(wanted, now) if queue is not None else bucket.limiter.delay_for(wanted, now))
    if state == "paused":
        # The limiter holds a paused bucket (hold_until), so `delay` already covers the pause.
        return Availability(state, max(delay, _until(learner.pause_until, now)), REASON_PAUSED, blocked=False)
    return Availability(state, delay, None if delay == 0.0 else REASON_RATE_LIMITED, blocked=False)


def _headroom(bucket: Bucket, now: float) -> float:
    """The smallest fraction of burst left over the bucket's units (0.0 empty, 1.0 full)."""
    return min(limit.available(now) / limit.burst for limit in bucket.limiter.units.values())


def choose_bucket(
    provider: Provider, request: AcquireRequest, now: float, timeout: float = math.inf
) -> Bucket:
    """The bucket to grant on or queue on for `request`.

    A bucket that can grant now wins (by strategy). Otherwise the bucket that can grant
    soonest, if that is within `timeout` seconds. Otherwise `all_buckets_exhausted` with
    a reason per bucket and the earliest known `retry_after` — except for a provider with
    one bucket that is merely rate-limited or paused: that bucket is returned and the
    service answers `timeout`, as for any single-key provider.

    :raises RatelimitdError: `all_buckets_exhausted` with `reasons` and maybe `retry_after`.
    """
    buckets = provider.buckets
    exclude = request.exclude
    if len(buckets) == 1 and not exclude:
        # Hot path: one key, nothing to choose.
        (only,) = buckets.values()
        learner = only.learner
        if (
            learner is None
            or (learner.exhausted_until is None and learner.disabled_until is None)
            or bucket_state(only, now) not in UNAVAILABLE_STATES
        ):
            return only
    order = list(buckets.values())
    selection = provider.config.selection
    if selection == "round_robin":
        start = provider.rotation % len(order)
        order = order[start:] + order[:start]
    cost = request.cost
    ready: list[Bucket] = []
    best_waiting: Bucket | None = None
    best_delay = math.inf
    seen: dict[str, Availability] = {}
    for bucket in order:
        found = bucket_availability(bucket, now, cost, excluded=bucket.name in exclude)
        seen[bucket.name] = found
        if found.blocked:
            continue
        if found.reason is None:
            ready.append(bucket)
            if selection != "most_headroom":
                break  # the first ready one in (rotated) order
        elif found.delay < best_delay:
            best_waiting, best_delay = bucket, found.delay
    if ready:
        chosen = max(ready, key=lambda b: _headroom(b, now)) if selection == "most_headroom" else ready[0]
    elif best_waiting is not None and (best_delay <= timeout or len(buckets) == 1):
        chosen = best_waiting
    else:
        raise _exhausted(provider.name, seen)
    if selection == "round_robin":
        provider.rotation = (list(buckets).index(chosen.name) + 1) % len(buckets)
    return chosen


def _exhausted(provider: str, seen: Mapping[str, Availability]) -> RatelimitdError:
    """`all_buckets_exhausted` with every bucket's reason and the earliest return of a non-excluded one."""
    reasons = {name: found.reason or REASON_RATE_LIMITED for name, found in seen.items()}
    fields: dict[str, Any] = {"reasons": reasons}
    delays = [found.delay for found in seen.values() if found.reason != REASON_EXCLUDED]
    earliest = min(delays, default=math.inf)
    if math.isfinite(earliest):
        fields["retry_after"] = round(earliest, 6)
    detail = ", ".join(f"{name}: {why}" for name, why in reasons.items())
    hint = f"; retry in about {earliest:.3f} s" if math.isfinite(earliest) else ""
    return RatelimitdError(
        ErrorCode.ALL_BUCKETS_EXHAUSTED,
        f"provider {provider!r}: no bucket can serve within the timeout ({detail}){hint}",
        **fields,
    )
