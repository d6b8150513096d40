"""The `adaptive` policy's rules: one cut per round, noise tolerance, recovery between brackets.

Pure: no I/O, no clock reads. `BucketLearner` (learner.py) owns the factor and calls these.

A round of 429s starts at a streak of 3 or at once with the provider's evidence (a unit at 0,
or a Retry-After that pauses the bucket: scope.py). What the provider delivered over the last
steady 2 s (delivery.py) is its rate: the `ceiling` (where 429s begin) is the lowest of the
rates at which rounds began and the delivered rates (with the known noise share added), and a
round cuts to 97 % of the delivered rate when that is lower than the streak policy's table
(10, 10, 20 ... 30 % of the current rate for rounds in a row), which applies while nothing
steady was measured (right after a drop, between whole-bucket pauses). A cut from above the
delivered rate to it (`drain_cut`) drains the provider's bucket by itself: the learner then
pauses nothing for its 429 or the late ones (while no noise share is known). A first round near
the ceiling only goes back under it, and 429s right after a recovery climb step go back to
the level held before the climb (which restarts the count of rounds in a row; for 5 s after,
429s still answer the climb and pause nothing while no noise share is known). Recovery
climbs to 97 % of the ceiling, holds a plateau, then probes: the first step straight to 110 %
of the level held, for 5 s (the provider's burst can hide a small overshoot for seconds); held
without a 429 it forgets the ceiling and goes back to the highest level held before (a climb:
429s right after it go back to the level held before the probe), or climbs on in doubling
steps, one per second; a failed probe (its first fresh 429 is enough) goes back to
the level held before it, does not count as a round in a row, and doubles the plateau (up to
`recovery_plateau_long`, 160 s: a ceiling that keeps holding is probed rarely; but at most
`recovery_plateau_max`, 10 s, while the provider recently allowed 10 % more); a level that
held a whole plateau and then meets 429s steps down only half a step.
Schedule: docs/learning.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ratelimitd.core.learning.delivery import DeliveryModel

if TYPE_CHECKING:
    from ratelimitd.core.learning.types import LearningSettings

__all__ = ("AdaptiveRules", "streak_points")

_EWMA_ALPHA = 0.02  # ~ the last 50 fresh reports
_KNEE = 0.97  # without a known-good level, climb to 97% of the ceiling
_FORGET_ABOVE = 1.1  # a level held 10% past the ceiling: the provider recently allowed more
_PROBE_ABOVE = 1.1  # the first probe step: 10% above the level held quietly before it
_ROUND_GAP = 10.0  # rounds of 429s closer than this are "in a row" (deeper cuts)
_PROBE_HOLD = 5.0  # recovery intervals each probe step is held
_HELD_STEP = 0.5  # a level held a whole plateau steps down by half a recovery step


def streak_points(streak: int) -> int:
    """Points (percent) one 429 cuts at `streak` in the streak policy: 3-4 -> 10, 5-9 -> 20, 10+ -> 30."""
    if streak < 3:
        return 0
    if streak <= 4:
        return 10
    if streak <= 9:
        return 20
    return 30


class AdaptiveRules:
    """Round, noise and recovery bookkeeping of one bucket."""

    # Slots: one of these per bucket, and a dict of ~30 attributes costs ~1.5 KB more each.
    __slots__ = (
        "_best_held", "_ceiling_before_cut", "_epoch_429", "_epoch_ok", "_epoch_pairs",
        "_factor_after_cut", "_factor_before_cut", "_free", "_good", "_last_bad_at",
        "_last_eval_at", "_last_fresh_limited", "_level", "_level_since", "_noise_check_at",
        "_plateau", "_plateau_since", "_prev_n", "_prev_share", "_probe_steps",
        "_probe_top", "_probing", "_raised_at", "_stable_since", "_stepped_back_at", "ceiling",
        "delivery", "drain_cut",
        "last_cut_at", "last_cut_permit", "noise_share", "recent_share", "rounds", "settings",
    )  # fmt: skip

    def __init__(self, settings: LearningSettings, now: float) -> None:
        self.settings = settings
        self.ceiling: float | None = None
        self.noise_share: float | None = None
        self.recent_share = 0.0  # EWMA of the 429 share of fresh reports
        self.last_cut_at: float | None = None
        self.last_cut_permit = 0
        # The last cut went from above what the provider delivered to under it: that cut
        # drains the provider's bucket, its 429s (and the late ones) need no whole-bucket pause.
        self.drain_cut = False
        self.rounds = 0  # rounds of 429s in a row (each less than _ROUND_GAP after the last)
        self._last_bad_at: float | None = None
        self._last_eval_at = now
        self._epoch_ok = self._epoch_429 = 0
        self._epoch_pairs = 0  # fresh 429s right after another fresh 429: clustering
        self._last_fresh_limited = False
        self._prev_share = 0.0
        self._prev_n = 0
        self._noise_check_at: float | None = None
        self._factor_before_cut = 1.0
        self._factor_after_cut = 1.0
        self._ceiling_before_cut: float | None = None
        self._plateau_since: float | None = None
        self._plateau = settings.recovery_plateau
        self._probe_steps = 0
        self._probing = False
        self._raised_at: float | None = None  # the last recovery step up
        self._stepped_back_at: float | None = None  # the last step back from a failed step up
        self._free = False  # a held probe forgot the ceiling: the provider allows more, climb fast
        self._good: float | None = None  # the level held before the current probe
        self._probe_top = math.inf  # the first probe step: held without a 429, forget the ceiling
        self._stable_since: float | None = None  # the last round cut (or forgotten ceiling)
        self._level = 1.0  # the factor as last seen by `tick`, unchanged since `_level_since`
        self._level_since = now
        self._best_held: float | None = None  # highest level held a plateau without a 429
        self.delivery = DeliveryModel(settings.delivery_window)  # what the provider delivers

    def expects_429s(self, factor: float, floor: float, now: float) -> bool:
        """A 429 now answers a step the policy chose: recovery is probing or raised the rate
        moments ago, or the rate sits at the known ceiling (within its 3 % knee) above the
        floor (the floor is forced, not chosen)."""
        if self.ceiling is not None and factor >= self.ceiling * _KNEE - 1e-9 and factor > floor + 1e-9:
            return True
        return self.stepping_up(now)

    def stepping_up(self, now: float) -> bool:
        """Recovery is probing, or raised the rate moments ago, or stepped back from such a
        step moments ago (the step emptied the provider's bucket, which the level held before
        only kept from 429s while it lasted): a 429 now answers that step."""
        # Not while a noise share is known: whole-bucket pauses are then how `auto` tells
        # load from noise.
        return self._raised_recently(now) or (
            self.noise_share is None and self._within_hold(self._stepped_back_at, now)
        )

    def _raised_recently(self, now: float) -> bool:
        """Recovery is probing, or raised the rate less than a probe's hold ago."""
        return self._probing or self._within_hold(self._raised_at, now)

    def _within_hold(self, since: float | None, now: float) -> bool:
        """`since` is less than one probe step's hold (5 recovery intervals) before `now`."""
        return since is not None and now - since < self.settings.recovery_interval * _PROBE_HOLD

    def is_fresh(self, permit: int | None, now: float) -> bool:
        """Evidence about the current rate? Permits granted before the last cut are late answers."""
        if permit is not None:
            return permit > self.last_cut_permit
        return self.last_cut_at is None or now - self.last_cut_at >= self.settings.late_window

    def on_pause(self, start: float, end: float) -> None:
        """A whole-bucket pause: the delivery model does not read across it."""
        self.delivery.on_pause(start, end)

    def on_success(self, permit: int | None, now: float) -> None:
        self.delivery.on_success(now)
        if self.is_fresh(permit, now):
            self._epoch_ok += 1
            self._last_fresh_limited = False
            self.recent_share *= 1.0 - _EWMA_ALPHA

    def on_rate_limit(
        self, factor: float, streak: int, permit: int | None, now: float, floor: float,
        last_granted: int, *, evidence: bool = False, baseline: float = 0.0,
    ) -> tuple[float, str] | None:  # fmt: skip
        """A 429: returns (new factor, reason) for a cut, or None (late, noise, too few).

        A round starts at a streak of 3 (the streak policy's threshold), or at once with `evidence`
        (Retry-After or rate-limit headers: the provider said it is a rate limit).
        `baseline` (requests/s at factor 1) turns the delivered success rate into a factor.
        """
        if not self.is_fresh(permit, now):
            return None
        self._epoch_429 += 1
        self._epoch_pairs += self._last_fresh_limited
        self._last_fresh_limited = True
        self.recent_share = self.recent_share * (1.0 - _EWMA_ALPHA) + _EWMA_ALPHA
        noise = self.noise_share
        if not evidence and noise is not None and self.recent_share <= noise * 1.5 + 0.02:
            return None  # the share a noisy provider always shows: not about our rate
        if streak < 3 and not evidence and not self._probing:
            # Below the streak threshold and no evidence: no signal, not even to wait. (A probe
            # is an experiment: its first fresh 429 answers it.)
            return None
        self._last_bad_at = now
        if not evidence and noise is None and self._looks_like_noise(factor):
            self._learn_noise()
            return max(factor, self._factor_before_cut), "429 share did not fall with the rate: noise"
        in_a_row = self.last_cut_at is not None and now - self.last_cut_at < _ROUND_GAP
        self.rounds = self.rounds + 1 if in_a_row else 1
        ceiling = factor if self.ceiling is None else min(self.ceiling, factor)
        steady = self.delivery.steady_rate(now, factor * baseline)
        measured = None
        if steady is not None and baseline > 0:
            measured = steady / baseline / (1.0 - (self.noise_share or 0.0))
            ceiling = min(ceiling, measured)
        new, reason = self._level_after(factor, ceiling, floor, now, measured)
        if new >= factor - 1e-9:
            return None
        n = self._epoch_ok + self._epoch_429
        self._prev_share = self._epoch_429 / n if n else 0.0
        self._prev_n = n
        self._epoch_ok = self._epoch_429 = self._epoch_pairs = 0
        if noise is None and not evidence:
            self._noise_check_at = now + self.settings.noise_window
        self._factor_before_cut = factor
        self._factor_after_cut = new
        self._ceiling_before_cut = self.ceiling
        self.ceiling = ceiling
        self.last_cut_at = now
        self.last_cut_permit = last_granted
        # Set by the delivered rate (not a deeper cut of the streak table: then the reading
        # still shows the old capacity), from a rate above it.
        self.drain_cut = measured is not None and measured * _KNEE - 1e-9 <= new <= measured < factor - 1e-9
        if self._raised_recently(now):
            # Only the step's own 429s open the window after it: a cut inside it does not extend it.
            self._stepped_back_at = now
        self._plateau_since = None
        self._probe_steps = 0
        self._probing = False
        self._raised_at = None
        self._free = False
        return new, reason

    def _level_after(
        self, factor: float, ceiling: float, floor: float, now: float, measured: float | None
    ) -> tuple[float, str]:
        """The level a fresh round of 429s at `factor` leads to, and why (sets the plateau).

        A step back after a climb that overshot restarts the count of rounds in a row (the
        next one only goes back under the ceiling); steps back under the ceiling in a row
        escalate to the streak policy's cuts, so a provider that really dropped is followed down fast.
        """
        near_ceiling = self.ceiling is not None and self.rounds == 1
        held = (
            not self._probing
            and self._plateau_since is not None
            and now - self._plateau_since >= self.settings.recovery_plateau
        )
        climbed = (  # recovery raised the rate since the last cut, and only just now
            not self._probing
            and self.last_cut_at is not None
            and factor > self._factor_after_cut + 1e-9
            and (abs(factor - self._level) > 1e-9 or now - self._level_since < self.settings.recovery_quiet)
        )
        if climbed:
            # Recovery overshot: back to the level held quietly before the climb (or under
            # the level that failed, if that is lower). Not a new round of cuts.
            new = max(floor, min(self._factor_after_cut, ceiling * _KNEE))
            reason = f"429s after climbing to {factor:.3g}: back to {new:.3g}"
            self._plateau = self.next_plateau(ceiling, now)
        elif near_ceiling and held:
            # The level held a whole plateau: it is only just above the provider's rate.
            new = max(floor, factor - self.settings.recovery_min_step * _HELD_STEP)
            reason = f"429s after holding {factor:.3g}: one step down, to {new:.3g}"
            self._plateau = self.next_plateau(ceiling, now)
        elif (self._probing or near_ceiling) and ceiling * _KNEE < factor:
            new = max(floor, ceiling * _KNEE)
            if self._probing and self._good is not None and new < self._good <= ceiling:
                new = self._good  # the level held before this probe: still good
            reason = f"429s at {factor:.3g}: back under the ceiling, to {new:.3g}"
            self._plateau = self.next_plateau(ceiling, now)
        else:
            points = streak_points(self.rounds + 2)
            new = factor * (1.0 - points / 100.0)
            reason = f"round {self.rounds} of 429s: cut {points}% of the current rate"
            if measured is not None and measured * _KNEE < new:
                new = measured * _KNEE
                reason = f"round {self.rounds} of 429s: down under the delivered rate"
            new = max(floor, new)
            self._plateau = self.settings.recovery_plateau
            self._stable_since = now
        if climbed or self._probing:
            self.rounds = 0  # an overshoot, not a round of cuts: the next round is a first one
        return new, reason

    def next_plateau(self, ceiling: float, now: float) -> float:
        """The plateau after a failed probe under `ceiling`: double the last one.

        Up to `recovery_plateau_max` (10 s) while the provider has recently allowed more (a
        level 10 % past `ceiling` held a whole plateau, and the last round cut is less than
        `recovery_plateau_long` ago: it may come back, probe often); else up to
        `recovery_plateau_long` (160 s): a ceiling that keeps holding is probed rarely.
        """
        s = self.settings
        cap = s.recovery_plateau_long
        best = self._best_held
        recent = self._stable_since is not None and now - self._stable_since < s.recovery_plateau_long
        if best is not None and best > ceiling * _FORGET_ABOVE and recent:
            cap = s.recovery_plateau_max
        return min(cap, self._plateau * 2.0)

    def tick(self, factor: float, top: float, now: float) -> tuple[str, float, str] | None:
        """(kind, new factor, reason) for a noise verdict or a recovery step, else None."""
        s = self.settings
        if abs(factor - self._level) > 1e-9:
            self._level, self._level_since = factor, now
        elif now - self._level_since >= s.recovery_plateau and (
            self._last_bad_at is None or self._last_bad_at < self._level_since
        ):
            self._best_held = max(factor, self._best_held or 0.0)
        verdict = self._noise_verdict(factor, now)
        if verdict is not None:
            return verdict
        if not s.recovery or now - self._last_eval_at < s.recovery_interval:
            return None
        self._last_eval_at = now
        if self._last_bad_at is not None and now - self._last_bad_at < s.recovery_quiet:
            return None
        if self.last_cut_at is not None and now - self.last_cut_at < s.recovery_quiet:
            return None
        if factor >= top - 1e-9:
            self.ceiling = None
            self._probing = False
            return None
        ceiling = self.ceiling if self.ceiling is not None and self.ceiling < top else None
        target = min(top, top if ceiling is None else ceiling * _KNEE)
        if factor < target - 1e-9 and not self._probing:
            new = min(target, factor + max(s.recovery_min_step, s.recovery_gain * (target - factor)))
            self._raised_at = now
            return "recovered", new, f"climb toward {target:.3g}"
        if self._plateau_since is None:
            self._plateau_since = now
        if self._free:
            hold = s.recovery_interval  # the ceiling is forgotten: one step per interval
        elif not self._probing:
            hold = self._plateau
        else:
            hold = s.recovery_interval * _PROBE_HOLD
        if now - self._plateau_since < hold:
            return None
        self._plateau_since = now
        if self._probing and ceiling is not None and factor >= self._probe_top - 1e-9:
            # Held the first probe step (10% above the level held before) without a 429:
            # the provider allows more.
            # (Not when the step is taken: a bucket's burst hides an overshoot for seconds.)
            self.ceiling = ceiling = None
            self._plateau = s.recovery_plateau
            self._free = True
            self._stable_since = now
            best = self._best_held
            if best is not None and best > factor:
                # Straight back to the highest level the provider has allowed for a whole
                # plateau (CUBIC's fast return to W_max); the doubling steps go on from there.
                # Spent: only holding it again makes it "recently allowed" (a partial return
                # then probes on the slow schedule, not every ~18 s).
                self._best_held = None
                # A climb, not a probe step: 429s right after it go back to the level held
                # before the probe (a probe the provider's burst hid can look held).
                self._probing = False
                self._raised_at = now
                return "recovered", min(top, best), f"the provider allows more: back to {best:.3g}"
        if not self._probing:
            self._good = factor  # held a whole plateau without a 429
        self._probing = True
        new = min(top, factor + s.recovery_min_step * 2.0**self._probe_steps)
        if self._probe_steps == 0 and ceiling is not None:
            # The first step goes straight to where holding it proves the provider allows more.
            new = min(top, max(new, factor * _PROBE_ABOVE))
            self._probe_top = new
        self._probe_steps += 1
        return "recovered", new, "probe above the known ceiling" if ceiling else "probe"

    def _noise_verdict(self, factor: float, now: float) -> tuple[str, float, str] | None:
        """After a cut: did the 429 share stay where it was? Then it is noise: undo the cut."""
        if self._noise_check_at is None or now < self._noise_check_at:
            return None
        self._noise_check_at = None
        if not self._looks_like_noise(factor):
            return None
        share = self._learn_noise()
        return "noise", max(factor, self._factor_before_cut), f"429 share {share:.3f} is noise"

    def _looks_like_noise(self, factor: float) -> bool:
        """The epoch since the last cut (lower rate) kept the previous epoch's 429 share."""
        s = self.settings
        n = self._epoch_ok + self._epoch_429
        if n < s.noise_min_samples or self._prev_n < s.noise_min_samples or self._prev_share <= 0:
            return False
        if factor > self._factor_after_cut + 1e-9:
            return False  # recovery already climbed since the cut: no comparison
        share = self._epoch_429 / n
        if share < s.noise_ratio * self._prev_share or share > s.noise_max_share:
            return False
        # Independent 429s follow a 429 about as often as anything else does; congestion
        # answers come in clusters (the in-flight requests of one round).
        return self._epoch_pairs <= (2.0 * share + 0.1) * self._epoch_429

    def undo_cuts(self, ceiling: float | None) -> None:
        """Forget the rounds of cuts since `ceiling` was the ceiling: they answered noise."""
        self.ceiling = ceiling
        self.rounds = 0
        self._noise_check_at = None
        self._last_bad_at = None
        self.last_cut_at = None
        self.last_cut_permit = 0
        self._probing = False
        self._plateau_since = None
        self._epoch_ok = self._epoch_429 = self._epoch_pairs = 0

    def _learn_noise(self) -> float:
        n = self._epoch_ok + self._epoch_429
        share = self._epoch_429 / n
        self.noise_share = share
        self.ceiling = self._ceiling_before_cut
        self.rounds = 0
        self._noise_check_at = None
        self._last_bad_at = None
        self.last_cut_at = None
        self.last_cut_permit = 0
        return share

    def snapshot(self) -> dict[str, object]:
        return {"ceiling": self.ceiling, "noise_share": self.noise_share}

    def restore(self, data: dict[str, object], decay: float, now: float) -> None:
        ceiling = data.get("ceiling")
        noise = data.get("noise_share")
        if isinstance(ceiling, int | float) and decay >= 0.5:
            self.ceiling = float(ceiling)
        if isinstance(noise, int | float):
            self.noise_share = float(noise)
