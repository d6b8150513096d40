"""Why a bucket's rate or state changed, as one word from a bounded set, and a bucket's record of it.

Pure: no I/O, no clock reads; times are monotonic seconds passed in. The learner explains
each decision in words for people ("round 2 of 429s: cut 30% of the current rate"); metric
labels and log fields need a bounded set, so `cause_of` maps those words (and the bucket's
state) to one of `CAUSES`. `tests/unit/test_causes.py` drives every learner path and checks
that none falls through to "other".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = (
    "CAUSES",
    "DIRECTIONS",
    "NO_EVENTS",
    "BucketEvents",
    "Cause",
    "EventStats",
    "cause_of",
)

Cause = Literal[
    "429s",  # a round of 429 answers (the learner's cut)
    "retry_after",  # a Retry-After the provider sent
    "announced_limit",  # the provider announced its limit in headers
    "pacing",  # remaining/reset headers: spread out or hold until the reset
    "quota",  # a spent quota or billing stop
    "overload",  # 503/529: a brief pause
    "auth",  # 401/403: the key is taken out of rotation
    "noise_undone",  # the 429s were noise, the cut is undone
    "recovery",  # climbing back after a quiet period
    "reset",  # an operator's `reset`
    "other",
]
CAUSES: tuple[Cause, ...] = (
    "429s",
    "retry_after",
    "announced_limit",
    "pacing",
    "quota",
    "overload",
    "auth",
    "noise_undone",
    "recovery",
    "reset",
    "other",
)
DIRECTIONS = ("down", "up")

# The learner's reason texts by how they start (core/learning/learner.py, adaptive.py).
# Order matters: "429 share" (noise) before "429s".
_PREFIXES: tuple[tuple[str, Cause], ...] = (
    ("429 share", "noise_undone"),
    ("429s", "429s"),
    ("round ", "429s"),
    ("streak ", "429s"),
    ("retry_after", "retry_after"),
    ("announced ", "announced_limit"),
    ("pacing", "pacing"),
    ("remaining 0 for", "pacing"),
    ("hold over", "pacing"),
    ("overload", "overload"),
    ("status 401", "auth"),
    ("status 403", "auth"),
    ("disable over", "auth"),
    ("climb", "recovery"),
    ("probe", "recovery"),
    ("the provider allows more", "recovery"),
    ("quota reset", "quota"),
    ("remaining 0 until", "quota"),
    ("reset", "reset"),
)


def cause_of(reason: str, *, state: str | None = None) -> Cause:
    """The bounded cause of a decision, from its reason text and the bucket's new state.

    A spent quota's reason is the client's own words (`insufficient_quota`), so the
    state (`exhausted`) decides it; likewise `disabled` means an auth failure.
    """
    if state == "exhausted":
        return "quota"
    if state == "disabled":
        return "auth"
    for prefix, cause in _PREFIXES:
        if reason.startswith(prefix):
            return cause
    return "other"


@dataclass(frozen=True, slots=True)
class EventStats:
    """A snapshot of `BucketEvents` with wall times (unix seconds), for status, metrics and views."""

    changes: dict[tuple[str, Cause], int]  # (direction, cause) -> count
    pauses: dict[Cause, int]  # cause -> count
    paused_seconds: float
    resets: int
    reason: str | None  # the cause of the last change or pause
    reason_since: float | None
    last_429: float | None

    def as_json(self) -> dict[str, Any]:
        changes: dict[str, dict[str, int]] = {direction: {} for direction in DIRECTIONS}
        for (direction, cause), count in self.changes.items():
            changes.setdefault(direction, {})[cause] = count
        return {
            "reason": self.reason,
            "reason_since": self.reason_since,
            "last_429": self.last_429,
            "rate_changes": changes,
            "pauses": dict(self.pauses),
            "paused_seconds": round(self.paused_seconds, 3),
            "resets": self.resets,
        }


NO_EVENTS = EventStats({}, {}, 0.0, 0, None, None, None)


class BucketEvents:
    """What a bucket's learning did, counted by direction and cause, for metrics and views.

    Made on a bucket's first event (most buckets never have one). `paused_seconds(now)`
    counts the time spent paused, including the pause in progress, so a 1.5 s pause shows
    in a counter even when no scrape lands inside it.
    """

    __slots__ = (
        "_pause_end",
        "_pause_start",
        "_paused_done",
        "changes",
        "last_429_at",
        "last_cause",
        "last_cause_at",
        "pauses",
        "resets",
        "state",
    )

    def __init__(self) -> None:
        self.changes: dict[tuple[str, Cause], int] = {}  # (direction, cause) -> count
        self.pauses: dict[Cause, int] = {}
        self.resets = 0
        self.state = "ok"  # the state after the last decision (to see it change)
        self.last_cause: Cause | None = None
        self.last_cause_at: float | None = None
        self.last_429_at: float | None = None
        self._paused_done = 0.0
        self._pause_start: float | None = None
        self._pause_end = 0.0

    def changed(self, direction: str, cause: Cause, now: float, *, note: bool = True) -> None:
        """The rate moved `direction` ("down" or "up") because of `cause` (`note`: and that
        is now the bucket's reason)."""
        key = (direction, cause)
        self.changes[key] = self.changes.get(key, 0) + 1
        if note:
            self.noted(cause, now)

    def noted(self, cause: Cause, now: float) -> None:
        """The latest reason the bucket is in its state (shown as "why" and "since")."""
        self.last_cause = cause
        self.last_cause_at = now

    def paused(self, cause: Cause, until: float, now: float) -> None:
        """A pause until `until` began (or a running one was extended)."""
        self.pauses[cause] = self.pauses.get(cause, 0) + 1
        self.extend_pause(until, now)
        self.noted(cause, now)

    def extend_pause(self, until: float, now: float) -> None:
        """The bucket is paused until `until` (a new pause, or a later end of the running one)."""
        if self._pause_start is not None and self._pause_end > now:
            self._pause_end = max(self._pause_end, until)
            return
        self._close_pause()
        self._pause_start, self._pause_end = now, until

    def end_pause(self, now: float) -> None:
        """A pause ended early (`reset`)."""
        if self._pause_start is not None:
            self._pause_end = min(self._pause_end, now)
            self._close_pause()

    def _close_pause(self) -> None:
        if self._pause_start is not None:
            self._paused_done += max(0.0, self._pause_end - self._pause_start)
            self._pause_start = None

    def paused_seconds(self, now: float) -> float:
        """Seconds paused so far, the running pause included up to `now`."""
        total = self._paused_done
        if self._pause_start is not None:
            total += max(0.0, min(now, self._pause_end) - self._pause_start)
        return total

    def stats(self, now: float, wall: float) -> EventStats:
        """A snapshot; monotonic times become unix times (`wall` is the wall clock at `now`)."""

        def unix(at: float | None) -> float | None:
            return None if at is None else round(wall + (at - now), 3)

        return EventStats(
            changes=dict(self.changes),
            pauses=dict(self.pauses),
            paused_seconds=self.paused_seconds(now),
            resets=self.resets,
            reason=self.last_cause,
            reason_since=unix(self.last_cause_at),
            last_429=unix(self.last_429_at),
        )
