"""A bucket limiter that grants from a lease of a shared bucket (the redis backend).

Pure: no asyncio, no clock reads; every method takes `now` (monotonic seconds).

A `LeasedLimiter` is a `BucketLimiter` with the same methods, so the service, the wait
queues, selection and learning run on it unchanged. While the shared store answers, it
grants only what was leased to this host (`balance`, per unit; a multi-unit cost all or
nothing) and says when it runs low (`on_low`, which the backend answers with a refill);
`lease_request` sizes the next lease from the recent local grant rate. While the store is
unreachable (`fallback`), it is the plain local GCRA at `fallback_share` of the rate,
starting with only what was left of the lease, so failing over releases no burst.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ratelimitd.core.limiter import BucketLimiter, LimitSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("LeaseRequest", "LeaseSettings", "LeasedLimiter")

_SLACK = 1e-9
_RETRY = 0.02  # seconds a waiter's timer waits for a lease when no better guess is known
_MIN_SAMPLE = 0.005  # shorter intervals tell nothing about a rate


class LeaseSettings:
    """How large a lease is: about `lease_time` of the host's grant rate, at most
    `max_share` of the burst; `fallback_share` of the rate while the store is down."""

    __slots__ = ("fallback_share", "lease_time", "max_share")

    def __init__(self, lease_time: float, max_share: float, fallback_share: float) -> None:
        self.lease_time = lease_time
        self.max_share = max_share
        self.fallback_share = fallback_share


# unit -> (at least, at most): a lease must bring `at least` (a waiter's need) and may bring more.
LeaseRequest = dict[str, tuple[float, float]]


class LeasedLimiter(BucketLimiter):
    __slots__ = (
        "_grant_rate",
        "_sized_at",
        "_taken",
        "balance",
        "blocked_until",
        "fallback",
        "held_until",
        "last_grant",
        "low_water",
        "need",
        "on_low",
        "refilling",
        "settings",
    )

    def __init__(
        self,
        limits: Mapping[str, LimitSpec],
        now: float,
        settings: LeaseSettings,
        on_low: Callable[[], None],
        *,
        fallback: bool,
    ) -> None:
        super().__init__(limits, now)
        self.settings = settings
        self.on_low = on_low
        self.fallback = False
        self.balance: dict[str, float] = dict.fromkeys(self.units, 0.0)
        self.low_water: dict[str, float] = dict.fromkeys(self.units, 0.0)
        self.need: dict[str, float] = {}
        self._taken: dict[str, float] = dict.fromkeys(self.units, 0.0)
        self._grant_rate: dict[str, float] = dict.fromkeys(self.units, 0.0)
        self._sized_at = now
        self.last_grant = now
        self.refilling = False  # a refill is on its way: don't ask again
        self.blocked_until = now  # the store said: nothing before then (local monotonic time)
        self.held_until: float | None = None
        if fallback:
            self.enter_fallback(now)

    @classmethod
    def replacing(
        cls,
        old: BucketLimiter,
        now: float,
        settings: LeaseSettings,
        on_low: Callable[[], None],
        *,
        fallback: bool,
    ) -> LeasedLimiter:
        """A leased limiter with `old`'s limits and learned scale (its fill level is the store's)."""
        specs = {unit: LimitSpec(lim.baseline, lim.burst) for unit, lim in old.units.items()}
        fresh = cls(specs, now, settings, on_low, fallback=fallback)
        if old.scale != 1.0:
            fresh.set_scale(old.scale, now)
        return fresh

    # -- the acquire path -------------------------------------------------------------------

    def try_take(self, cost: dict[str, float], now: float) -> float:
        if self.fallback:
            return BucketLimiter.try_take(self, cost, now)
        held = self.held_until
        if held is not None and now < held:
            return held - now
        balance = self.balance
        short = False
        for unit, amount in cost.items():
            have = balance.get(unit)
            if have is not None and have + _SLACK < amount:
                short = True
        if short:
            self._short_of(cost)
            return max(self.blocked_until - now, _RETRY)
        low = False
        taken = self._taken
        for unit, amount in cost.items():
            have = balance.get(unit)
            if have is not None:
                have -= amount
                balance[unit] = have
                taken[unit] += amount
                if have < self.low_water[unit]:
                    low = True
        self.last_grant = now
        if low and not self.refilling:
            self.refilling = True
            self.on_low()
        return 0.0

    def _short_of(self, cost: Mapping[str, float]) -> None:
        need = self.need
        for unit, amount in cost.items():
            have = self.balance.get(unit)
            if have is not None:
                need[unit] = max(need.get(unit, 0.0), amount - have)
        if not self.refilling:
            self.refilling = True
            self.on_low()

    def delay_for(self, cost: Mapping[str, float], now: float) -> float:
        """When `cost` could be granted: covered by the lease now, else at the shared rate
        (as if this host had the whole rate: an estimate must not time a waiter out early)."""
        if self.fallback:
            return BucketLimiter.delay_for(self, cost, now)
        delay = 0.0
        if self.held_until is not None and now < self.held_until:
            delay = self.held_until - now
        units = self.units
        for unit, amount in cost.items():
            have = self.balance.get(unit)
            if have is not None and amount > have + _SLACK:
                delay = max(delay, (amount - have) / units[unit].rate, self.blocked_until - now)
        return delay

    def settle(self, difference: Mapping[str, float], now: float) -> None:
        """A report's `used` minus the estimate: more used is owed out of the lease (it may go
        below zero, so later grants wait for the next lease); less used goes back into it."""
        if self.fallback:
            BucketLimiter.settle(self, difference, now)
            return
        for unit, amount in difference.items():
            if unit in self.balance:
                self.balance[unit] -= amount

    # -- rates and pauses (learning) --------------------------------------------------------

    def set_scale(self, factor: float, now: float) -> None:
        BucketLimiter.set_scale(self, factor, now)
        if self.fallback:
            self._scale_units(factor * self.settings.fallback_share, now)

    def _scale_units(self, factor: float, now: float) -> None:
        for limit in self.units.values():
            limit.set_rate(limit.baseline * factor, now)

    def hold_until(self, deadline: float) -> None:
        """A pause: nothing before `deadline`; the lease is forfeited (the store is paused too)."""
        BucketLimiter.hold_until(self, deadline)
        self.held_until = deadline
        for unit in self.balance:
            self.balance[unit] = 0.0

    def release_hold(self, now: float) -> None:
        BucketLimiter.release_hold(self, now)
        self.held_until = None
        self.blocked_until = now

    # -- leases (the backend) ---------------------------------------------------------------

    def primary_unit(self) -> str:
        return next(unit for unit, limit in self.units.items() if limit is self.primary)

    def lease_request(self, now: float) -> LeaseRequest:
        """What the next lease should bring, per unit; empty when nothing is needed."""
        elapsed = now - self._sized_at
        if elapsed >= _MIN_SAMPLE:
            for unit, taken in self._taken.items():
                sample = taken / elapsed
                old = self._grant_rate[unit]
                self._grant_rate[unit] = sample if old == 0.0 else 0.5 * old + 0.5 * sample
                self._taken[unit] = 0.0
            self._sized_at = now
        settings = self.settings
        request: LeaseRequest = {}
        for unit, limit in self.units.items():
            target = min(self._grant_rate[unit] * settings.lease_time, limit.burst * settings.max_share)
            self.low_water[unit] = target / 2
            least = self.need.get(unit, 0.0)
            most = max(target - self.balance[unit], least)
            if most > _SLACK:
                request[unit] = (least, most)
        nobody_waits = not any(least > 0.0 for least, _ in request.values())
        if request and nobody_waits and all(self.balance[u] >= self.low_water[u] for u in request):
            return {}  # top up only when some unit is under its low water
        return request

    def credit(
        self, granted: Mapping[str, float], now: float, left: Mapping[str, float] | None = None
    ) -> None:
        """A lease arrived: it serves the waiters first (the caller wakes the queue).

        `left` is what the shared bucket still holds per unit: the local GCRA (unused for
        granting while leasing) mirrors it plus this host's lease, refilling at the shared
        rate from there, so `most_headroom` compares keys by the fleet's view, as fresh as
        the last lease of each key."""
        for unit, amount in granted.items():
            if unit in self.balance:
                self.balance[unit] += amount
        if left:
            for unit, amount in left.items():
                if unit in self.balance:
                    self.units[unit].set_available(amount + self.balance[unit], now)
        self.need.clear()
        self.refilling = False
        self.blocked_until = now

    def denied(self, retry_in: float, now: float) -> None:
        """The shared bucket has nothing now; it will in `retry_in` seconds."""
        self.blocked_until = now + retry_in
        for unit, limit in self.units.items():
            limit.set_available(self.balance[unit], now)  # the mirror: the store is empty

    def take_back(self) -> dict[str, float]:
        """Hand the unused lease back (shutdown, reload, idle): what it held."""
        held = {unit: amount for unit, amount in self.balance.items() if amount > _SLACK}
        for unit in self.balance:
            self.balance[unit] = 0.0
        return held

    # -- when the store is unreachable ------------------------------------------------------

    def enter_fallback(self, now: float) -> None:
        """Limit locally at `fallback_share` of the rate, starting with what is left of the lease."""
        left = self.take_back()
        self.fallback = True
        self.refilling = False
        self.need.clear()
        self._scale_units(self.scale * self.settings.fallback_share, now)
        for unit, limit in self.units.items():
            limit.set_available(left.get(unit, 0.0), now)
        if self.held_until is not None and now < self.held_until:
            BucketLimiter.hold_until(self, self.held_until)

    def leave_fallback(self, now: float) -> None:
        """The store answers again: grant from leases only, at the shared rate."""
        self.fallback = False
        self.refilling = False
        self._scale_units(self.scale, now)
        self.blocked_until = now
