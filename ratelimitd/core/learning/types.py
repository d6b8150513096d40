"""The learning core's value types: settings, one report, one decision.

Pure data; `ratelimitd.core.learning.learner` re-exports all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from ratelimitd.core.headers.parse import RateLimitHint
    from ratelimitd.core.learning.scope import ScopeSetting

__all__ = (
    "QUOTA_REASONS",
    "Action",
    "Decision",
    "LearningSettings",
    "Policy",
    "ReportEvent",
    "State",
)

Policy = Literal["static", "streak", "adaptive"]
Action = Literal["none", "reduced", "paused", "recovered", "disabled"]
State = Literal["ok", "paused", "cooling_down", "exhausted", "disabled"]

# Body error codes that mean "quota or billing spent", not "too fast" (OpenAI, Anthropic).
QUOTA_REASONS = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded", "billing_not_active"}
)


class ReportEvent(NamedTuple):
    """One `report` op, already validated and merged by the service.

    A NamedTuple, not a frozen dataclass: built on every report, it costs a third.
    """

    status: int | None  # HTTP status; None for a network error
    network_error: bool = False
    permit: int | None = None
    reason: str | None = None
    retry_after: float | None = None  # relative seconds (report field or parsed headers)
    hint: RateLimitHint | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LearningSettings:
    """Policy choice, feature gates and tunables (defaults are the documented ones)."""

    policy: Policy = "adaptive"
    learning: bool = False
    recovery: bool = False
    pacing: bool = False
    max_pause: float = 300.0
    honour_retry_after: bool = True  # False only to replay the first release (benchmark)
    retry_after_scope: ScopeSetting = "auto"  # whom a 429's Retry-After holds (scope.py)
    history_size: int = 50
    floor_fraction: float = 0.2  # never below 20% of the configured rate ...
    floor_rate: float = 1.0  # ... nor below 1 request/s
    allow_above_configured: bool = False
    late_window: float = 1.0  # permit-less 429s this soon after a cut are late answers
    recovery_quiet: float = 5.0  # no cut and no unexplained 429 for this long before climbing
    recovery_interval: float = 1.0  # one recovery step per interval
    recovery_gain: float = 0.3  # share of the distance to the ceiling closed per step
    recovery_min_step: float = 0.01  # smallest step, as a fraction of the configured rate
    recovery_plateau: float = 10.0  # seconds held at a known-good level before probing
    # A failed probe doubles the plateau, up to this while the provider recently allowed 10%
    # more than the ceiling (it may come back: keep probing every ~15 s) ...
    recovery_plateau_max: float = 10.0
    # ... else up to this (a ceiling that keeps holding is probed rarely)
    recovery_plateau_long: float = 160.0
    delivery_window: float = 2.0  # successes per second over this long (none read across a pause)
    noise_window: float = 5.0  # seconds after a cut to check whether the 429 share fell
    noise_min_samples: int = 30
    noise_ratio: float = 0.6  # share after / share before >= this means "not load related"
    noise_max_share: float = 0.5
    overload_pause: float = 2.0  # 503/529 without Retry-After
    quota_reset_min: float = 600.0  # remaining 0 with a reset this far away is a spent quota
    quota_default_pause: float = 3600.0  # quota reason without any reset time
    disable_for: float = 600.0  # 401/403: out of rotation this long (or until reset)
    pace_low_fraction: float = 0.1  # remaining below this share of the limit spreads it out
    decay_half_life: float = 900.0  # persisted cuts halve their distance to 1.0 per this stale time


@dataclass(frozen=True, slots=True)
class Decision:
    """What a report or tick changed; `factor` and `pause_until` are the limiter's new settings."""

    action: Action
    factor: float
    pause_until: float | None
    state: State
    reason: str
    hold_until: float | None = None  # PACING: nothing before this (remaining 0 until reset)
    pace_factor: float | None = None  # PACING: temporary cap already included in `factor`
