"""A `BucketLearner`'s learned state as JSON-able data, and back .

Pure: no I/O, no clock reads; `now` (monotonic) and `wall` (unix time at `now`) are
parameters. Deadlines are stored as unix times; restored cuts decay toward the configured
rate by half per `decay_half_life` of staleness; deadlines already past are dropped; a
ceiling survives only while the decay keeps at least half of the cut.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ratelimitd.core.learning.history import HistoryEntry
from ratelimitd.core.learning.learner import BucketLearner

if TYPE_CHECKING:
    from ratelimitd.core.learning.types import LearningSettings

__all__ = ("SNAPSHOT_VERSION", "restore", "snapshot")

SNAPSHOT_VERSION = 1


def snapshot(learner: BucketLearner, now: float, wall: float) -> dict[str, object]:
    """JSON-able learned state of `learner`; deadlines as unix times."""

    def to_wall(deadline: float | None) -> float | None:
        return None if deadline is None or deadline <= now else wall + (deadline - now)

    return {
        "version": SNAPSHOT_VERSION,
        "policy": learner.settings.policy,
        "factor": learner._policy_factor,
        "top": learner._top,
        "seed_points": learner._seed_points,
        "streak": learner.streak,
        "next_permit": learner._next_permit,
        "paused_until": to_wall(learner._retry_until),
        "exhausted_until": to_wall(learner._exhausted_until),
        "disabled_until": to_wall(learner._disabled_until),
        "rules": learner.rules.snapshot(),
        "history": [entry.as_dict(now, wall) for entry in learner.history],
    }


def restore(
    settings: LearningSettings,
    baseline_rate: float,
    data: dict[str, object],
    now: float,
    wall: float,
    stale_for: float,
) -> BucketLearner:
    """Rebuild a learner from `snapshot` output; cuts decay toward 1.0 by `stale_for` seconds.

    Raises ValueError/TypeError/KeyError on malformed data (the caller drops it).
    """
    learner = BucketLearner(settings, baseline_rate, now)
    _load_into(learner, data, now, wall, stale_for)
    return learner


def _load_into(
    learner: BucketLearner, data: dict[str, object], now: float, wall: float, stale_for: float
) -> None:
    if data.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"learner snapshot: unknown version {data.get('version')!r}")
    settings = learner.settings
    decay = 0.5 ** (max(0.0, stale_for) / settings.decay_half_life)
    factor = _number(data, "factor")
    learner._policy_factor = min(1.0, max(learner.floor_factor, 1.0 - (1.0 - factor) * decay))
    if factor > 1.0:
        learner._policy_factor = factor  # an announced limit above configured: keep it
    learner._top = _number(data, "top")
    learner._seed_points = round(_number(data, "seed_points") * decay)
    learner.streak = int(_number(data, "streak"))
    learner._next_permit = max(1, int(_number(data, "next_permit")))

    def to_mono(key: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, int | float):
            raise TypeError(f"learner snapshot: {key} must be a number or null")
        deadline = now + (float(value) - wall)
        return deadline if deadline > now else None

    learner._retry_until = to_mono("paused_until")
    learner._exhausted_until = to_mono("exhausted_until")
    learner._disabled_until = to_mono("disabled_until")
    rules = data.get("rules")
    if isinstance(rules, dict):
        learner.rules.restore(rules, decay, now)
    history = data.get("history")
    if isinstance(history, list):
        for item in history:
            if isinstance(item, dict):
                learner.history.append(HistoryEntry.from_dict(item, now, wall))
    learner._record(now, "restored", None, factor, learner._policy_factor, "restored")


def _number(data: dict[str, object], key: str) -> float:
    value = data[key]
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"learner snapshot: {key} must be a finite number")
    return float(value)
