"""Learning a bucket's real rate from 429s and headers: one `BucketLearner` per bucket.

Pure: no I/O, no asyncio, no clock reads; every method takes `now` (monotonic seconds).

The service calls exactly this::

    learner = BucketLearner(settings, baseline_rate=configured_requests_per_second, now=now)
    permit = learner.on_grant(now)                    # echo it in the grant response
    decision = learner.learn(ReportEvent(...), now)   # None when nothing changed
    decision = learner.tick(now)                      # often; None when nothing changed
    limiter.set_scale(learner.factor, now)            # after any decision
    if learner.pause_until is not None: limiter.hold_until(learner.pause_until)
    learner.state(now), learner.shadow_factor, learner.ceiling, learner.streak, learner.history
    learner.reset(now)  (snapshots: ratelimitd.core.learning.persist)

`factor` is what the limiter applies now; `shadow_factor` what the policy would apply (they
differ only with the LEARNING gate off: shadow mode). Retry-After pauses are always honoured.
`exhausted_until` / `disabled_until` say when an exhausted or disabled bucket comes back; the
service should skip such a bucket (`state(now)`) rather than make its callers wait.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from ratelimitd.core.learning.adaptive import AdaptiveRules, streak_points
from ratelimitd.core.learning.history import History, HistoryEntry, new_history
from ratelimitd.core.learning.kinds import classify_report, quota_wait
from ratelimitd.core.learning.scope import RetryAfterScope, Scope, ScopeSetting
from ratelimitd.core.learning.types import (
    QUOTA_REASONS,
    Action,
    Decision,
    LearningSettings,
    Policy,
    ReportEvent,
    State,
)

if TYPE_CHECKING:
    from ratelimitd.core.headers.parse import RateLimitHint

__all__ = (
    "QUOTA_REASONS",
    "BucketLearner",
    "Decision",
    "LearningSettings",
    "Policy",
    "ReportEvent",
    "State",
)

_EPS = 1e-9


class BucketLearner:
    """The learning state of one bucket; all units of the bucket scale by one `factor`."""

    # Slots: one per bucket (memory at thousands of buckets).
    __slots__ = (
        "_disabled_forever", "_disabled_until", "_enforced", "_exhausted_until", "_hold_until",
        "_last_limited_permit", "_next_permit", "_overload_until", "_pace_factor", "_pace_until",
        "_policy_factor", "_ra_cuts", "_retry_until", "_streak_points", "_top", "baseline_rate", "history",
        "late_ignored", "retry_after_scope", "rules", "settings", "streak",
    )  # fmt: skip

    def __init__(self, settings: LearningSettings, baseline_rate: float, now: float) -> None:
        if not (math.isfinite(baseline_rate) and baseline_rate > 0):
            raise ValueError(f"baseline_rate: must be a finite number > 0, got {baseline_rate!r}")
        self.settings = settings
        # Read on every report and grant: computed once (settings never change for a learner).
        self._enforced = settings.learning and settings.policy != "static"
        self.baseline_rate = baseline_rate
        self.history: History = new_history(settings.history_size)
        self._next_permit = 1
        self._init_state(now)

    def _init_state(self, now: float) -> None:
        self._policy_factor = 1.0
        self._top = 1.0
        self.streak = 0
        self._last_limited_permit = 0
        self._streak_points = 0
        # Cuts Retry-Afters started before any verdict on them: the factor and ceiling before
        # the first, to go back to if those 429s prove load-unrelated.
        self._ra_cuts: tuple[float, float | None] | None = None
        self._retry_until: float | None = None
        self._overload_until: float | None = None
        self._hold_until: float | None = None
        self._pace_factor: float | None = None
        self._pace_until: float | None = None
        self._exhausted_until: float | None = None
        self._disabled_until: float | None = None
        self._disabled_forever = False
        self.late_ignored = 0
        self.rules = AdaptiveRules(self.settings, now)
        self.retry_after_scope = RetryAfterScope(self.settings.retry_after_scope)

    # -- what the limiter and the status op read --------------------------------------------

    @property
    def floor_factor(self) -> float:
        s = self.settings
        return min(1.0, max(s.floor_fraction, s.floor_rate / self.baseline_rate))

    @property
    def _enforcing(self) -> bool:
        return self._enforced

    @property
    def shadow_factor(self) -> float:
        """The factor the policy would set (with LEARNING on, equal to `factor`)."""
        return 1.0 if self.settings.policy == "static" else self._policy_factor

    @property
    def factor(self) -> float:
        """The multiplier the limiter must apply now (1.0 static / shadow mode)."""
        if self._enforced:
            base = self._policy_factor
        elif self.settings.pacing:
            base = self._top
        else:
            base = 1.0
        if self._pace_factor is not None:
            base = min(base, self._pace_factor)
        return base

    @property
    def ceiling(self) -> float | None:
        """Rate factor at which 429s began (adaptive), or None."""
        return self.rules.ceiling

    @property
    def pause_until(self) -> float | None:
        """Monotonic deadline before which nothing may be granted (None: no pause)."""
        until = self._retry_until
        if self._enforced and self._overload_until is not None:
            until = self._overload_until if until is None else max(until, self._overload_until)
        if self.settings.pacing and self._hold_until is not None:
            until = self._hold_until if until is None else max(until, self._hold_until)
        return until

    @property
    def exhausted_until(self) -> float | None:
        return self._exhausted_until if self._enforced else None

    @property
    def disabled_until(self) -> float | None:
        """Deadline of a 401/403 disable; `math.inf` until `reset` when no time applies."""
        if not self._enforced:
            return None
        return math.inf if self._disabled_forever else self._disabled_until

    def state(self, now: float) -> State:
        return self._state(now, enforced=True)

    def shadow_state(self, now: float) -> State:
        """The state the policy would be in with LEARNING on."""
        return self._state(now, enforced=False)

    def _state(self, now: float, *, enforced: bool) -> State:
        active = self._enforcing if enforced else self.settings.policy != "static"
        if active and (self._disabled_forever or _after(self._disabled_until, now)):
            return "disabled"
        if active and _after(self._exhausted_until, now):
            return "exhausted"
        pause = self.pause_until if enforced else self._retry_until
        if _after(pause, now) or (not enforced and active and _after(self._overload_until, now)):
            return "paused"
        factor = self.factor if enforced else self.shadow_factor
        top = self._top if (self.settings.pacing or not enforced) else 1.0
        if factor < min(1.0, top) - 1e-6:
            return "cooling_down"
        return "ok"

    # -- events ------------------------------------------------------------------------------

    def on_grant(self, now: float) -> int:
        """A permit was granted; returns its id (unique and increasing for this bucket)."""
        permit = self._next_permit
        self._next_permit += 1
        return permit

    def on_report(self, event: ReportEvent, now: float) -> Decision:
        """Learn from one report; returns what changed (action `none` when nothing did)."""
        decision = self.learn(event, now)
        return self._decision("none", "success", now) if decision is None else decision

    def learn(self, event: ReportEvent, now: float) -> Decision | None:
        """Learn from one report; None when nothing the limiter follows changed.

        Most reports are successes that change nothing the limiter reads (factor, pause,
        state): the daemon's hot path then builds no `Decision` and applies nothing.
        """
        before = self.factor
        kind = classify_report(event, self.settings)
        if kind == "success" and not self.settings.pacing:
            self._on_success(event.permit, now)
            if self.factor == before:
                return None
            return self._decision("none", kind, now)
        action: Action = "none"
        reason: str = kind
        retry_after = event.retry_after
        if retry_after is None and event.hint is not None:
            retry_after = event.hint.retry_after
        if kind == "rate_limit":
            self._observe_scope(event.permit, limited=True, now=now)
        bucket_wait: float | None = None
        if self.settings.honour_retry_after and retry_after and retry_after > 0 and kind != "success":
            # The provider's explicit instruction (RFC 9110 §10.2.3), capped: for the whole
            # bucket, or only for the request that got it (its retry waits on the client side).
            wait = min(retry_after, self.settings.max_pause)
            scope, why = self._retry_after_scope(event, kind, now)
            if scope == "request":
                reason = f"retry_after {wait:g}s holds its request only ({why})"
            elif kind == "rate_limit":
                bucket_wait = wait  # decided after the cut this 429 starts: it may do the job
            else:
                action, reason = self._pause_bucket(wait, now, action, reason)
        if kind == "success":
            self._on_success(event.permit, now)
        elif kind == "rate_limit":
            action, reason = self._on_rate_limit(event, now, action, reason, retry_after)
            if bucket_wait is not None:
                if not _limit_evidence(event.hint) and self._drained(event.permit, now):
                    if action == "none":
                        reason = (
                            f"retry_after {bucket_wait:g}s holds its request only "
                            "(the cut went under what the provider delivers)"
                        )
                else:
                    paused, why_paused = self._pause_bucket(bucket_wait, now, "none", reason)
                    if action == "none":
                        action, reason = paused, why_paused
        elif kind == "quota":
            self._exhausted_until = now + quota_wait(event, self.settings)
            reason = event.reason or "remaining 0 until a distant reset"
            self._record(now, "exhausted", event.status, before, before, reason)
        elif kind == "overload":
            if retry_after is None:
                self._overload_until = now + self.settings.overload_pause
                action = "paused" if self._enforcing else action
                reason = f"overload {event.status}"
        elif kind == "auth":
            if self.settings.disable_for > 0:
                self._disabled_until = now + self.settings.disable_for
            else:
                self._disabled_forever = True
            action = "disabled" if self._enforcing else action
            reason = f"status {event.status}"
            self._record(now, "disabled", event.status, before, before, reason)
        pace = self._apply_hint(event.hint, now) if self.settings.pacing else None
        if pace is not None and action == "none":
            action, reason = pace
        if action == "paused":
            self._record(now, "paused", event.status, before, self.factor, reason)
        return self._decision(action, reason, now)

    def _pause_bucket(self, wait: float, now: float, action: Action, reason: str) -> tuple[Action, str]:
        """Hold the whole bucket for `wait` s (a longer pause extends the current one)."""
        deadline = now + wait
        if self._retry_until is None or deadline > self._retry_until:
            if self._retry_until is None or self._retry_until <= now:
                action = "paused"  # a new pause (extensions are not news)
                self.retry_after_scope.on_pause(self._next_permit - 1)
            self._retry_until = deadline
            self.rules.on_pause(now, deadline)
            reason = f"retry_after {wait:g}s"
        return action, reason

    def _drained(self, permit: int | None, now: float) -> bool:
        """Adaptive, and this 429 answers a rate the last cut left (it made the cut, or came
        late) while that cut went from above what the provider delivered to under it: the
        cut drains the provider's bucket, a whole-bucket pause is not needed. (Not while a
        noise share is known: the pauses are then how `auto` tells load from noise; never
        for a unit at 0, the caller checks.)"""
        rules = self.rules
        return (
            self._enforcing
            and self.settings.policy == "adaptive"
            and rules.drain_cut
            and rules.noise_share is None
            and not rules.is_fresh(permit, now)
        )

    def _on_success(self, permit: int | None, now: float) -> None:
        self._observe_scope(permit, limited=False, now=now)
        # adaptive: a success granted before the last 429's permit is older news (429s
        # come back faster than successes); it does not end the streak.
        older = permit is not None and permit < self._last_limited_permit
        if self.settings.policy != "adaptive" or not older:
            self.streak = 0
        self.rules.on_success(permit, now)

    def _observe_scope(self, permit: int | None, *, limited: bool, now: float) -> None:
        """Feed the Retry-After scope judge; undo the cuts Retry-Afters started once it
        finds them load-unrelated."""
        scope = self.retry_after_scope
        was = scope.scope
        scope.observe(permit, limited)
        if was == "bucket" and scope.scope == "request":
            self.rules.noise_share = max(self.rules.noise_share or 0.0, scope.noise_share)
            self._undo_retry_after_cuts(now)

    def _retry_after_scope(self, event: ReportEvent, kind: str, now: float) -> tuple[Scope, str]:
        """Whom this answer's Retry-After holds, and why (see `ratelimitd.core.learning.scope`)."""
        if kind != "rate_limit":
            return "bucket", "not a rate limit"
        if event.hint is not None and event.hint.exhausted_units():
            return "bucket", "a unit at 0"  # a hard limit: always the whole bucket
        scope = self.retry_after_scope
        if (
            scope.scope == "bucket"
            and self._enforcing
            and self.settings.policy == "adaptive"
            and self.rules.expects_429s(self._policy_factor, self.floor_factor, now)
        ):
            return "request", "answers a step of the policy's: stepping back"
        return scope.scope, "judged load-unrelated" if scope.setting == "auto" else "configured"

    def _undo_retry_after_cuts(self, now: float) -> None:
        """The Retry-After 429s were load-unrelated: undo the cuts they started (recent ones)."""
        cuts, self._ra_cuts = self._ra_cuts, None
        if cuts is None or self.settings.policy != "adaptive":
            return
        factor, ceiling = cuts
        if factor > self._policy_factor:
            before = self.factor
            self._policy_factor = factor
            self.rules.undo_cuts(ceiling)
            self._changed(
                now,
                "noise",
                None,
                before,
                "429 share right after pauses did not fall: noise with Retry-After, cuts undone",
            )

    def _on_rate_limit(
        self, event: ReportEvent, now: float, action: Action, reason: str, retry_after: float | None
    ) -> tuple[Action, str]:
        self.streak += 1
        if event.permit is not None and (event.retry_after or event.hint is not None):
            # "Exhausted until ...": successes granted before this permit don't contradict it.
            self._last_limited_permit = max(self._last_limited_permit, event.permit)
        policy = self.settings.policy
        before = self.factor
        if policy == "streak":
            if self.streak >= 3 and self._streak_points < 80:
                self._streak_points = min(80, self._streak_points + streak_points(self.streak))
                self._policy_factor = max(self.floor_factor, 1.0 - self._streak_points / 100.0)
                reason = f"streak {self.streak}: {self._streak_points} points off"
                return self._changed(now, "reduced", event.status, before, reason), reason
            return action, reason
        if policy == "adaptive":
            # A Retry-After is the provider's evidence while it pauses the bucket (it tracks
            # load, or no verdict yet): a round of cuts starts at once, without a streak.
            scope = self.retry_after_scope
            by_retry_after = bool(retry_after) and scope.scope == "bucket"
            if retry_after and scope.scope == "request" and not self.rules.stepping_up(now):
                # Judged noise: its Retry-After starts no round of cuts. (While recovery steps
                # up, the 429 share above the noise share answers the step: rules.on_rate_limit.)
                return action, reason
            ceiling = self.rules.ceiling
            verdict = self.rules.on_rate_limit(
                self._policy_factor,
                self.streak,
                event.permit,
                now,
                self.floor_factor,
                self._next_permit - 1,
                evidence=by_retry_after or _limit_evidence(event.hint),
                baseline=self.baseline_rate,
            )
            if verdict is not None and by_retry_after and scope.verdict == "none" and self._ra_cuts is None:
                self._ra_cuts = (before, ceiling)
            if verdict is not None:
                self._policy_factor, reason = verdict
                return self._changed(now, "reduced", event.status, before, reason), reason
        return action, reason

    def tick(self, now: float) -> Decision | None:
        """Time-driven changes: pause ends, recovery steps, noise verdicts. Cheap."""
        before = self.factor
        changed: Action | None = None
        reason = ""
        if _expired(self._retry_until, now):
            self._retry_until = None
            changed, reason = "none", "pause over"
        if _expired(self._overload_until, now):
            self._overload_until = None
            changed, reason = "none", "overload pause over"
        if _expired(self._hold_until, now):
            self._hold_until = None
            changed, reason = "none", "hold over"
        if _expired(self._pace_until, now):
            self._pace_factor = self._pace_until = None
            changed, reason = "none", "pacing over"
        if _expired(self._exhausted_until, now):
            self._exhausted_until = None
            changed, reason = "none", "quota reset"
        if _expired(self._disabled_until, now):
            self._disabled_until = None
            changed, reason = "none", "disable over"
        if self.settings.policy == "adaptive":
            step = self.rules.tick(self._policy_factor, self._top, now)
            if step is not None:
                kind, self._policy_factor, reason = step
                action: Action = "recovered" if kind == "recovered" else "none"
                self._changed(now, kind, None, before, reason)
                changed = action
        if changed is None:
            return None
        return self._decision(changed, reason, now)

    def set_retry_after_scope(self, setting: ScopeSetting) -> None:
        """A reload changed the provider's `retry_after_scope`: start judging afresh."""
        if setting != self.settings.retry_after_scope:
            self.settings = replace(self.settings, retry_after_scope=setting)
            self.retry_after_scope = RetryAfterScope(setting)

    def reset(self, now: float) -> None:
        """Forget everything learned: baseline rate, state ok (permit ids keep increasing)."""
        before = self.factor
        self._init_state(now)
        self._record(now, "reset", None, before, self.factor, "reset")

    # -- helpers -----------------------------------------------------------------------------

    def _apply_hint(self, hint: RateLimitHint | None, now: float) -> tuple[Action, str] | None:
        """PACING: announced limits, remaining 0 holds, low remaining spreads out."""
        if hint is None or hint.unit != "requests":
            return None
        result: tuple[Action, str] | None = None
        if hint.limit is not None and hint.window is not None and hint.limit > 0 and hint.window > 0:
            announced = hint.limit / hint.window / self.baseline_rate
            top = announced if self.settings.allow_above_configured else min(1.0, announced)
            if abs(top - self._top) > 1e-6:
                before = self.factor
                was_at_top = self._policy_factor >= self._top - 1e-6
                self._top = top
                if was_at_top or self._policy_factor > top:
                    self._policy_factor = top
                reason = f"announced {hint.limit:g}/{hint.window:g}s"
                kind: Action = "reduced" if self.factor < before else "recovered"
                if abs(self.factor - before) > 1e-9:
                    self._changed(now, kind, None, before, reason)
                    result = (kind, reason)
        remaining, reset = hint.remaining, hint.reset_after
        if remaining is None or reset is None or reset <= 0:
            return result
        if remaining <= 0 and reset < self.settings.quota_reset_min:
            self._hold_until = max(self._hold_until or now, now + reset)
            return "paused", f"remaining 0 for {reset:g}s"
        low = hint.limit is not None and remaining < self.settings.pace_low_fraction * hint.limit
        if low and remaining > 0:
            self._pace_factor = max(self.floor_factor, remaining / reset / self.baseline_rate)
            self._pace_until = now + reset
            return result or ("none", f"pacing {remaining:g} over {reset:g}s")
        if remaining > 0 and not low:
            self._pace_factor = self._pace_until = None
        return result

    def _changed(self, now: float, kind: str, status: int | None, before: float, reason: str) -> Action:
        self._record(now, kind, status, before, self.factor, reason)
        return "reduced" if kind == "reduced" else "none"

    def _record(
        self, now: float, kind: str, status: int | None, before: float, after: float, reason: str
    ) -> None:
        self.history.append(HistoryEntry(
            at_monotonic=now, kind=kind, status=status,
            factor_before=before, factor_after=after, reason=reason,
        ))  # fmt: skip

    def _decision(self, action: Action, reason: str, now: float) -> Decision:
        pace = self._pace_factor if self.settings.pacing else None
        hold = self._hold_until if self.settings.pacing else None
        return Decision(action, self.factor, self.pause_until, self.state(now), reason, hold, pace)


def _limit_evidence(hint: RateLimitHint | None) -> bool:
    """Headers that say "a hard limit is reached": a unit with nothing remaining.

    A Retry-After alone is not: flaky providers send one on load-unrelated 429s too.
    """
    return hint is not None and bool(hint.exhausted_units())


def _after(deadline: float | None, now: float) -> bool:
    return deadline is not None and now < deadline


def _expired(deadline: float | None, now: float) -> bool:
    return deadline is not None and now >= deadline - _EPS
