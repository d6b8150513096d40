"""A learner's state as it travels between hosts, and taking over another host's.

Snapshots are the state file's (`core.learning.persist`), with deadlines relative to the
moment they were written (`wall = 0`): the reader adds the age the Redis server measured,
so no host clock is compared with another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ratelimitd.core.learning import persist

if TYPE_CHECKING:
    from ratelimitd.core.learning.learner import BucketLearner
    from ratelimitd.core.learning.types import LearningSettings

__all__ = ("Signature", "adopt", "relative_snapshot", "signature")

# What other hosts must follow: the factor, a pause, a spent quota, a disabled key.
Signature = tuple[float, float | None, float | None, float | None]
NOTHING_LEARNED: Signature = (1.0, None, None, None)


def signature(learner: BucketLearner, now: float) -> Signature:
    def live(deadline: float | None) -> float | None:
        return None if deadline is None or deadline <= now else round(deadline, 3)

    return (
        round(learner.factor, 9),
        live(learner.pause_until),
        live(learner.exhausted_until),
        live(learner.disabled_until),
    )


def relative_snapshot(learner: BucketLearner, now: float) -> dict[str, object]:
    """The snapshot with every deadline in seconds from now."""
    return persist.snapshot(learner, now, 0.0)


def adopt(
    settings: LearningSettings,
    mine: BucketLearner,
    data: dict[str, object],
    age: float,
    now: float,
) -> BucketLearner:
    """A learner that follows another host's snapshot written `age` seconds ago.

    This host keeps numbering its own permits; every permit it granted so far counts as
    granted before the other host's decision, so their 429s are late answers (one cut per
    round across hosts, as on one host). Raises ValueError/TypeError/KeyError when malformed.
    """
    learner = persist.restore(settings, mine.baseline_rate, data, now, age, 0.0)
    granted = mine._next_permit - 1
    learner._next_permit = mine._next_permit
    learner._last_limited_permit = max(mine._last_limited_permit, granted)
    learner.rules.last_cut_permit = max(learner.rules.last_cut_permit, granted)
    if learner.factor < mine.factor:
        learner.rules.last_cut_at = now
    return learner
