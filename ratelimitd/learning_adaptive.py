"""The `adaptive` policy's rules: one cut per round, noise tolerance, recovery toward a ceiling.

Pure: no I/O, no clock reads. `BucketLearner` (learning.py) owns the factor and calls these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratelimitd.learning import LearningSettings

__all__ = ("AdaptiveRules", "seed_points")

_EWMA_ALPHA = 0.02  # ~ the last 50 fresh reports
_KNEE = 0.97  # climb fast to 97% of the ceiling, then hold, then probe
_FORGET_ABOVE = 1.1  # a probe 10% past the ceiling without 429s forgets the ceiling


def seed_points(streak: int) -> int:
    """Points (percent) one 429 cuts at `streak` in the seed's table: 3-4 -> 10, 5-9 -> 20, 10+ -> 30."""
    if streak < 3:
        return 0
    if streak <= 4:
        return 10
    if streak <= 9:
        return 20
    return 30


class AdaptiveRules:
    """Round, noise and recovery bookkeeping of one bucket (issue 6, items 1-3)."""

    def __init__(self, settings: LearningSettings, now: float) -> None:
        self.settings = settings
        self.ceiling: float | None = None
        self.noise_share: float | None = None
        self.recent_share = 0.0  # EWMA of the 429 share of fresh reports
        self.last_cut_at: float | None = None
        self.last_cut_permit = 0
        self._last_bad_at: float | None = None
        self._last_eval_at = now
        self._epoch_ok = self._epoch_429 = 0
        self._epoch_pairs = 0  # fresh 429s right after another fresh 429: clustering
        self._last_fresh_limited = False
        self._prev_share = 0.0
        self._prev_n = 0
        self._noise_check_at: float | None = None
        self._factor_before_cut = 1.0
        self._ceiling_before_cut: float | None = None
        self._plateau_since: float | None = None
        self._probe_steps = 0

    def is_fresh(self, permit: int | None, now: float) -> bool:
        """Evidence about the current rate? Permits granted before the last cut are late answers."""
        if permit is not None:
            return permit > self.last_cut_permit
        return self.last_cut_at is None or now - self.last_cut_at >= self.settings.late_window

    def on_success(self, permit: int | None, now: float) -> None:
        if self.is_fresh(permit, now):
            self._epoch_ok += 1
            self._last_fresh_limited = False
            self.recent_share *= 1.0 - _EWMA_ALPHA

    def on_rate_limit(
        self, factor: float, streak: int, permit: int | None, now: float, floor: float,
        last_granted: int,
    ) -> tuple[float, str] | None:  # fmt: skip
        """A 429: returns (new factor, reason) for a cut, or None (late, noise or below 3)."""
        if not self.is_fresh(permit, now):
            return None
        self._epoch_429 += 1
        self._epoch_pairs += self._last_fresh_limited
        self._last_fresh_limited = True
        self.recent_share = self.recent_share * (1.0 - _EWMA_ALPHA) + _EWMA_ALPHA
        noise = self.noise_share
        if noise is not None and self.recent_share <= noise * 1.5 + 0.02:
            return None  # the share a noisy provider always shows: not about our rate
        self._last_bad_at = now
        if streak < 3:
            return None
        new = max(floor, factor * (1.0 - seed_points(streak) / 100.0))
        if new >= factor - 1e-9:
            return None
        if noise is None and self._looks_like_noise(factor):
            self._learn_noise()
            return max(factor, self._factor_before_cut), "429 share did not fall with the rate: noise"
        n = self._epoch_ok + self._epoch_429
        self._prev_share = self._epoch_429 / n if n else 0.0
        self._prev_n = n
        self._epoch_ok = self._epoch_429 = self._epoch_pairs = 0
        if noise is None:
            self._noise_check_at = now + self.settings.noise_window
        self._factor_before_cut = factor
        self._ceiling_before_cut = self.ceiling
        self.ceiling = factor
        self.last_cut_at = now
        self.last_cut_permit = last_granted
        self._plateau_since = None
        self._probe_steps = 0
        return new, f"streak {streak}: cut {seed_points(streak)}% of the current rate"

    def tick(self, factor: float, top: float, now: float) -> tuple[str, float, str] | None:
        """(kind, new factor, reason) for a noise verdict or a recovery step, else None."""
        verdict = self._noise_verdict(factor, now)
        if verdict is not None:
            return verdict
        s = self.settings
        if not s.recovery or now - self._last_eval_at < s.recovery_interval:
            return None
        self._last_eval_at = now
        if self._last_bad_at is not None and now - self._last_bad_at < s.recovery_quiet:
            return None
        if self.last_cut_at is not None and now - self.last_cut_at < s.recovery_quiet:
            return None
        if factor >= top - 1e-9:
            self.ceiling = None
            return None
        ceiling = self.ceiling
        if ceiling is None or ceiling >= top:
            new = min(top, factor + max(s.recovery_min_step, s.recovery_gain * (top - factor)))
            return "recovered", new, f"climb toward {top:.3g}"
        knee = ceiling * _KNEE
        if factor < knee - 1e-9:
            new = min(knee, factor + max(s.recovery_min_step, s.recovery_gain * (knee - factor)))
            return "recovered", new, f"climb toward ceiling {ceiling:.3g}"
        if self._plateau_since is None:
            self._plateau_since = now
        if now - self._plateau_since < s.recovery_plateau:
            return None
        new = min(top, factor + s.recovery_min_step * 2.0**self._probe_steps)
        self._probe_steps += 1
        if new >= ceiling * _FORGET_ABOVE:
            self.ceiling = None
        return "recovered", new, f"probe above ceiling {ceiling:.3g}"

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
        if factor > 0.95 * self._factor_before_cut:
            return False  # recovery already brought the rate back: no comparison
        share = self._epoch_429 / n
        if share < s.noise_ratio * self._prev_share or share > s.noise_max_share:
            return False
        # Independent 429s follow a 429 about as often as anything else does; congestion
        # answers come in clusters (the in-flight requests of one round).
        return self._epoch_pairs <= (2.0 * share + 0.1) * self._epoch_429

    def _learn_noise(self) -> float:
        n = self._epoch_ok + self._epoch_429
        share = self._epoch_429 / n
        self.noise_share = share
        self.ceiling = self._ceiling_before_cut
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
