"""A `BucketLearner`'s learned state as JSON-able data, and back .

Pure: no I/O, no clock reads; `now` (monotonic) and `wall` (unix time at `now`) are
parameters. Deadlines are stored as unix times; restored cuts decay toward the configured
rate by half per `decay_half_life` of staleness; deadlines already past are dropped; a
ceiling survives only while the decay keeps at least half of the cut. Restored values are
checked and kept within what the live learner could reach (see `restore`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, TypeGuard

from ratelimitd.core.learning.history import HistoryEntry
from ratelimitd.core.learning.learner import BucketLearner

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.core.learning.types import LearningSettings

__all__ = (
    "MAX_ABOVE_CONFIGURED",
    "MAX_COUNTER",
    "MAX_QUOTA_WAIT",
    "SNAPSHOT_VERSION",
    "restore",
    "snapshot",
    "snapshot_problem",
)

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
        "streak_points": learner._streak_points,
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
    clamped: list[str] | None = None,
) -> BucketLearner:
    """Rebuild a learner from `snapshot` output; cuts decay toward 1.0 by `stale_for` seconds.

    Every value is checked and brought into the range the live learner can reach (a hand-edited
    or damaged file must not give 5x the configured rate, a 10-day pause or a permit id past
    2^53); what had to be changed is appended to `clamped` as "field: old -> new".
    Raises ValueError/TypeError/KeyError on malformed data (the caller drops it).
    """
    learner = BucketLearner(settings, baseline_rate, now)
    _load_into(learner, data, now, wall, stale_for, [] if clamped is None else clamped)
    return learner


def _renamed(data: Mapping[str, object]) -> dict[str, object]:
    """Files written before the `seed` policy was renamed `streak` say `seed_points`."""
    if "streak_points" not in data and "seed_points" in data:
        return {**data, "streak_points": data["seed_points"]}
    return dict(data)


def snapshot_problem(data: Mapping[str, object]) -> str | None:
    """Why `data` cannot be restored at all (wrong version, a field of the wrong type), or None.

    Needs no settings: the state file is checked with it when it is loaded, so a bad bucket
    is dropped, logged and kept aside before anything runs on it.
    """
    if data.get("version") != SNAPSHOT_VERSION:
        return f"unknown version {data.get('version')!r}"
    data = _renamed(data)
    for key in _NUMBERS:
        value = data.get(key)
        if not _is_number(value) or not math.isfinite(value):
            return f"{key}: must be a finite number, got {_short(value)}"
    for key in _DEADLINES:
        value = data.get(key)
        if value is not None and (not _is_number(value) or not math.isfinite(value)):
            return f"{key}: must be a finite number or null, got {_short(value)}"
    for key, kind in (("rules", dict), ("history", list)):
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{key}: must be {'an object' if kind is dict else 'an array'}, got {_short(value)}"
    return None


# Largest integer a double holds exactly: counters past it are not counters any more.
MAX_COUNTER = 2**53
# The most above its configured rate a bucket may be restored to, with allow_above_configured.
MAX_ABOVE_CONFIGURED = 1000.0
# A spent quota can park a bucket until a monthly reset; never longer.
MAX_QUOTA_WAIT = 31 * 86400.0
_NUMBERS = ("factor", "top", "streak_points", "streak", "next_permit")
_DEADLINES = ("paused_until", "exhausted_until", "disabled_until")
_MAX_STREAK_POINTS = 80  # the streak policy never takes more than 80% off


def _load_into(
    learner: BucketLearner,
    data: dict[str, object],
    now: float,
    wall: float,
    stale_for: float,
    clamped: list[str],
) -> None:
    data = _renamed(data)
    problem = snapshot_problem(data)
    if problem is not None:
        raise ValueError(f"learner snapshot: {problem}")
    settings = learner.settings
    floor = learner.floor_factor
    ceiling = MAX_ABOVE_CONFIGURED if settings.allow_above_configured else 1.0

    def within(key: str, low: float, high: float) -> float:
        value = _number(data, key)
        kept = min(high, max(low, value))
        if kept != value:
            clamped.append(f"{key}: {value!r} -> {kept!r}")
        return kept

    decay = 0.5 ** (max(0.0, stale_for) / settings.decay_half_life)
    factor = within("factor", floor, ceiling)
    learner._policy_factor = min(1.0, max(floor, 1.0 - (1.0 - factor) * decay))
    if factor > 1.0:
        learner._policy_factor = factor  # an announced limit above configured (allowed): keep it
    learner._top = within("top", floor, ceiling)
    learner._streak_points = round(within("streak_points", 0, _MAX_STREAK_POINTS) * decay)
    learner.streak = int(within("streak", 0, MAX_COUNTER))
    learner._next_permit = int(within("next_permit", 1, MAX_COUNTER))

    def to_mono(key: str, longest: float) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        assert _is_number(value)  # snapshot_problem checked it
        deadline = now + (float(value) - wall)
        if deadline <= now:
            return None
        if deadline > now + longest:
            clamped.append(f"{key}: {float(value) - wall:.0f} s from now -> {longest:.0f} s")
            return now + longest
        return deadline

    learner._retry_until = to_mono("paused_until", settings.max_pause)
    learner._exhausted_until = to_mono("exhausted_until", max(MAX_QUOTA_WAIT, settings.quota_default_pause))
    learner._disabled_until = to_mono("disabled_until", max(0.0, settings.disable_for))
    rules = data.get("rules")
    if isinstance(rules, dict):
        learner.rules.restore(_finite_rules(rules, floor, ceiling, clamped), decay, now)
    history = data.get("history")
    if isinstance(history, list):
        for item in history[-settings.history_size :]:
            entry = _history_entry(item, now, wall)
            if entry is not None:
                learner.history.append(entry)
    learner._record(now, "restored", None, factor, learner._policy_factor, "restored")


def _finite_rules(
    rules: dict[str, object], floor: float, ceiling: float, clamped: list[str]
) -> dict[str, object]:
    """The adaptive rules' saved numbers, each dropped when not finite, else kept in range."""
    kept: dict[str, object] = {}
    for key, low, high in (("ceiling", floor, ceiling), ("noise_share", 0.0, 1.0)):
        value = rules.get(key)
        if value is None:
            continue
        if not _is_number(value) or not math.isfinite(value):
            clamped.append(f"rules.{key}: {_short(value)} dropped")
            continue
        inside = min(high, max(low, float(value)))
        if inside != value:
            clamped.append(f"rules.{key}: {value!r} -> {inside!r}")
        kept[key] = inside
    return kept


def _history_entry(item: object, now: float, wall: float) -> HistoryEntry | None:
    """One saved history entry, or None when it is malformed (history is informative only)."""
    if not isinstance(item, dict):
        return None
    try:
        entry = HistoryEntry.from_dict(item, now, wall)
    except (ValueError, TypeError, KeyError):
        return None
    numbers = (entry.at_monotonic, entry.factor_before, entry.factor_after)
    if not all(math.isfinite(number) for number in numbers):
        return None
    if entry.at_monotonic > now:  # a time in the future is not history
        entry = replace(entry, at_monotonic=now)
    return entry


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(data: dict[str, object], key: str) -> float:
    value = data[key]
    if not _is_number(value) or not math.isfinite(value):
        raise TypeError(f"learner snapshot: {key} must be a finite number")
    return float(value)
