"""GCRA rate limits for one bucket, one per unit, granted atomically.

Pure: no asyncio, no clock reads; every method takes `now` (monotonic seconds).

GCRA keeps one number per unit, the theoretical arrival time `tat`: the time at
which the unit would be back to a full burst. A cost `c` is allowed at `now` iff
`max(tat, now) + c / rate - now <= burst / rate`. This is a token bucket with
capacity `burst` refilled at `rate`, stored as one float instead of two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ("BucketLimiter", "LimitSpec", "UnitLimit")

# `max(tat, now) + c / rate - now` is rounded to the grid of `now` (2e-13 s at now ~ 2000 s of
# uptime), so a cost that fits exactly (a burst-sized cost on a full bucket) can come out a few
# ulps over, every time: it would never be granted and its timer would spin. A microsecond of
# slack is far below any rate's resolution.
_SLACK: Final = 1e-6


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A configured limit: `rate_per_second` sustained, up to `burst` at once."""

    rate_per_second: float
    burst: float


class UnitLimit:
    """GCRA state of one unit (requests, tokens, ...) of one bucket."""

    __slots__ = ("_tat", "baseline", "burst", "rate")

    def __init__(self, spec: LimitSpec, now: float) -> None:
        if spec.rate_per_second <= 0 or spec.burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.baseline = spec.rate_per_second
        self.rate = spec.rate_per_second
        self.burst = spec.burst
        self._tat = now  # a full burst is available at start

    def delay_for(self, cost: float, now: float) -> float:
        """Seconds until `cost` could be taken (0.0 when it can be taken now)."""
        new_tat = max(self._tat, now) + cost / self.rate
        over = new_tat - now - self.burst / self.rate
        return over if over > _SLACK else 0.0

    def take(self, cost: float, now: float) -> None:
        self._tat = max(self._tat, now) + cost / self.rate

    def settle(self, amount: float, now: float) -> None:
        """Take `amount` more (> 0; may go into debt, delaying later grants) or give back
        `-amount` (< 0; never beyond a full burst)."""
        if amount >= 0:
            self._tat = max(self._tat, now) + amount / self.rate
        else:
            self._tat = max(now, self._tat + amount / self.rate)

    def available(self, now: float) -> float:
        """Units that could be taken at once now."""
        return self.burst - max(0.0, self._tat - now) * self.rate

    def set_available(self, amount: float, now: float) -> None:
        """Make exactly `amount` (at most the burst) available now, refilling from there."""
        self._tat = now + (self.burst - min(self.burst, max(0.0, amount))) / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate, keeping how full the bucket is (in units)."""
        used = max(0.0, self._tat - now) * self.rate
        self.rate = rate
        self._tat = now + used / rate

    def hold_until(self, deadline: float) -> None:
        """Grant nothing before `deadline`, and nothing stored at `deadline`: resume at the rate."""
        self._tat = max(self._tat, deadline + self.burst / self.rate)

    def release_hold(self, now: float) -> None:
        """End a pause early (reset): empty now, refilling at the rate from here."""
        self._tat = min(self._tat, now + self.burst / self.rate)


class BucketLimiter:
    """The limits of one bucket; a multi-unit cost is taken only when every unit allows it."""

    __slots__ = ("_units", "primary", "scale")

    def __init__(self, limits: Mapping[str, LimitSpec], now: float) -> None:
        self._units = {unit: UnitLimit(spec, now) for unit, spec in limits.items()}
        #: The unit a bucket's `rate` is reported in and learning scales from: `requests`
        #: when limited, else the first configured unit.
        self.primary = self._units.get("requests") or next(iter(self._units.values()))
        self.scale = 1.0

    @property
    def units(self) -> Mapping[str, UnitLimit]:
        return self._units

    def never_fits(self, cost: Mapping[str, float]) -> str | None:
        """The first unit whose burst is smaller than its cost: such a cost can never be granted."""
        for unit, amount in cost.items():
            limit = self._units.get(unit)
            if limit is not None and amount > limit.burst:
                return unit
        return None

    def delay_for(self, cost: Mapping[str, float], now: float) -> float:
        """Seconds until every unit could take its part of `cost`; nothing is consumed."""
        delay = 0.0
        for unit, amount in cost.items():
            limit = self._units.get(unit)
            if limit is not None:
                delay = max(delay, limit.delay_for(amount, now))
        return delay

    def delay_behind(self, queued: Mapping[str, float], cost: Mapping[str, float], now: float) -> float:
        """Seconds until `cost` could be taken after everything `queued` was taken first.

        O(this bucket's units): units named in neither map, or not limited here, are skipped.
        """
        delay = 0.0
        for unit, limit in self._units.items():
            ahead = queued.get(unit)
            extra = cost.get(unit)
            if ahead is None and extra is None:
                continue
            delay = max(delay, limit.delay_for((ahead or 0.0) + (extra or 0.0), now))
        return delay

    def try_take(self, cost: dict[str, float], now: float) -> float:
        """Take `cost` now and return 0.0, or take nothing and return the seconds to wait."""
        # The hot path of every acquire: one pass computing each unit's new tat, then commit.
        units = self._units
        if len(cost) == 1:  # most costs name one unit: no list of new tats to build
            for unit, amount in cost.items():
                limit = units.get(unit)
                if limit is None:
                    return 0.0  # a unit this provider does not limit is ignored
                tat = limit._tat if limit._tat > now else now
                new_tat = tat + amount / limit.rate
                over = new_tat - now - limit.burst / limit.rate
                if over > _SLACK:
                    return over
                limit._tat = new_tat
            return 0.0
        # Several units: check them all, then take from each (a second lookup per unit is
        # cheaper than keeping the new tats in a list of pairs).
        delay = 0.0
        for unit, amount in cost.items():
            limit = units.get(unit)
            if limit is None:
                continue  # a unit this provider does not limit is ignored (protocol.md, acquire)
            tat = limit._tat if limit._tat > now else now
            over = tat + amount / limit.rate - now - limit.burst / limit.rate
            if over > delay:
                delay = over
        if delay > _SLACK:
            return delay
        for unit, amount in cost.items():
            limit = units.get(unit)
            if limit is not None:
                limit._tat = (limit._tat if limit._tat > now else now) + amount / limit.rate
        return 0.0

    def delay_for_all(self, costs: Iterable[Mapping[str, float]], now: float) -> float:
        """Seconds until all `costs` (queued one after another) could have been taken."""
        total: dict[str, float] = {}
        for cost in costs:
            for unit, amount in cost.items():
                total[unit] = total.get(unit, 0.0) + amount
        # Above one burst, GCRA's delay is linear in the amount, so the sum is exact.
        return self.delay_for(total, now)

    def settle(self, difference: Mapping[str, float], now: float) -> None:
        """Apply a report's `used` minus the granted cost, per unit; units not limited are ignored."""
        for unit, amount in difference.items():
            limit = self._units.get(unit)
            if limit is not None:
                limit.settle(amount, now)

    def set_scale(self, factor: float, now: float) -> None:
        """Every unit's rate becomes its baseline × `factor`, keeping each fill level."""
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"scale must be a finite number > 0, got {factor!r}")
        self.scale = factor
        for limit in self._units.values():
            limit.set_rate(limit.baseline * factor, now)

    def set_rate(self, unit: str, rate: float, now: float) -> None:
        self._units[unit].set_rate(rate, now)

    def hold_until(self, deadline: float) -> None:
        for limit in self._units.values():
            limit.hold_until(deadline)

    def release_hold(self, now: float) -> None:
        for limit in self._units.values():
            limit.release_hold(now)

    def rate(self, unit: str = "requests") -> float | None:
        limit = self._units.get(unit)
        return None if limit is None else limit.rate
