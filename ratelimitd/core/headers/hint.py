"""What a provider's rate-limit headers said, normalised: `RateLimitHint` and its `UnitHint`s.

Pure data with a few derived views; built by `ratelimitd.core.headers.parse.parse_headers`.
Both are immutable named tuples rather than frozen dataclasses: the parser builds three of
them per report, and a frozen dataclass pays one `object.__setattr__` per field (about
1 µs for a hint against 0.1 µs for a tuple). Copy with changes by `_replace`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("DEFAULT_LONG_RESET_THRESHOLD", "HintKind", "RateLimitHint", "UnitHint")

#: A remaining of 0 with a reset further away than this is a quota, not a rate.
DEFAULT_LONG_RESET_THRESHOLD: Final = 3600.0

HintKind = Literal["ok", "rate_limited", "quota_exhausted"]


class _UnitFields(NamedTuple):
    limit: float | None = None
    remaining: float | None = None
    reset_after: float | None = None
    window: float | None = None
    window_assumed: bool = False
    used: float | None = None
    family: str | None = None


class UnitHint(_UnitFields):
    """What one family said about one unit (`requests`, `tokens`, `input_tokens`, ...).

    `reset_after` is seconds until the provider refills (relative to the response);
    `window` is the period `limit` applies to, in seconds; `window_assumed` is true when
    the window comes from the provider's documentation, not from the response itself.
    """

    __slots__ = ()

    @property
    def exhausted(self) -> bool:
        """True when the provider said nothing of this unit is left."""
        return self.remaining is not None and self.remaining <= 0

    @property
    def rate_per_second(self) -> float | None:
        """`limit / window` when both are known, else None."""
        if self.limit is None or not self.window:
            return None
        return self.limit / self.window


class _HintFields(NamedTuple):
    retry_after: float | None = None
    limit: float | None = None
    remaining: float | None = None
    reset_after: float | None = None
    window: float | None = None
    unit: str = "requests"
    malformed: int = 0
    units: Mapping[str, UnitHint] = MappingProxyType({})  # `RateLimitHint.__new__` gives a dict
    families: frozenset[str] = frozenset()
    ignored_families: frozenset[str] = frozenset()
    malformed_names: tuple[str, ...] = ()
    status: int | None = None
    resource: str | None = None
    suspicious: tuple[str, ...] = ()


class RateLimitHint(_HintFields):
    """What a provider's response headers said, normalised.

    Times are relative seconds from when the response was received. `units` holds the
    per-unit view; the flat `limit`/`remaining`/`reset_after`/`window`/`unit` fields
    mirror its primary unit (`requests` when present) for callers that want one number.
    Building a hint from the flat fields alone fills `units` with that one unit.
    `suspicious` names the values not taken as written: waits longer than `max_pause`
    without quota evidence, capped (one short reason each; see
    `ratelimitd.core.headers.plausibility`).
    """

    __slots__ = ()

    def __new__(
        cls,
        retry_after: float | None = None,
        limit: float | None = None,
        remaining: float | None = None,
        reset_after: float | None = None,
        window: float | None = None,
        unit: str = "requests",
        malformed: int = 0,
        units: Mapping[str, UnitHint] | None = None,
        families: frozenset[str] = frozenset(),
        ignored_families: frozenset[str] = frozenset(),
        malformed_names: tuple[str, ...] = (),
        status: int | None = None,
        resource: str | None = None,
        suspicious: tuple[str, ...] = (),
    ) -> RateLimitHint:
        if not units:
            flat = (limit, remaining, reset_after, window)
            if any(value is not None for value in flat):
                only = UnitHint(limit=limit, remaining=remaining, reset_after=reset_after, window=window)
                units = {unit: only}
            elif units is None:
                units = {}
        fields = (retry_after, limit, remaining, reset_after, window, unit, malformed, units)
        rest = (families, ignored_families, malformed_names, status, resource, suspicious)
        return tuple.__new__(cls, (*fields, *rest))

    @property
    def requests(self) -> UnitHint | None:
        return self.units.get("requests")

    @property
    def tokens(self) -> UnitHint | None:
        return self.units.get("tokens")

    @property
    def empty(self) -> bool:
        """True when the headers said nothing usable."""
        return self.retry_after is None and not self.units

    def exhausted_units(self) -> tuple[str, ...]:
        """Units whose remaining is 0, in name order."""
        return tuple(sorted(name for name, hint in self.units.items() if hint.exhausted))

    def min_reset_for_exhausted(self) -> float | None:
        """Seconds until the first exhausted unit refills (None: none exhausted or no reset)."""
        resets = self._exhausted_resets()
        return min(resets) if resets else None

    def max_reset_for_exhausted(self) -> float | None:
        """Seconds until every exhausted unit has refilled: how long a bucket should hold."""
        resets = self._exhausted_resets()
        return max(resets) if resets else None

    def suggested_pause(self) -> float | None:
        """The longest of Retry-After and `max_reset_for_exhausted()`; None if neither.

        Not capped: the caller applies its `max_pause`.
        """
        known = [v for v in (self.retry_after, self.max_reset_for_exhausted()) if v is not None]
        return max(known) if known else None

    def announced_rate_per_second(self, unit: str = "requests") -> float | None:
        """`limit / window` for `unit` when the provider (or its documentation) gave both."""
        hint = self.units.get(unit)
        return None if hint is None else hint.rate_per_second

    @property
    def rate_limited(self) -> bool:
        """429, or 403 with remaining 0 or a Retry-After (GitHub's primary/secondary limits)."""
        if self.status == 429:
            return True
        return self.status == 403 and (bool(self.exhausted_units()) or self.retry_after is not None)

    def is_quota_exhausted(self, long_reset_threshold: float = DEFAULT_LONG_RESET_THRESHOLD) -> bool:
        """True when a unit is at 0 until a reset more than `long_reset_threshold` s away."""
        return any(reset > long_reset_threshold for reset in self._exhausted_resets())

    def classify(self, long_reset_threshold: float = DEFAULT_LONG_RESET_THRESHOLD) -> HintKind:
        """`quota_exhausted` (park until the reset), `rate_limited` (slow down), or `ok`."""
        if self.is_quota_exhausted(long_reset_threshold):
            return "quota_exhausted"
        return "rate_limited" if self.rate_limited else "ok"

    def _exhausted_resets(self) -> list[float]:
        return [
            hint.reset_after
            for hint in self.units.values()
            if hint.exhausted and hint.reset_after is not None
        ]
