"""Is a reset or a Retry-After believable? Units by magnitude, long waits need evidence.

Pure: no clock (`now_wall` is a parameter), no I/O. A misread header must not park a bucket
for a week: `X-Rate-Limit-Reset: 600000` documented in milliseconds is ten minutes, not
seven days. Two rules:

* **Units by magnitude** (`seconds_until`): a bare number >= 10¹² is a unix time in
  milliseconds, >= 10⁹ a unix time in seconds (both are 2001-09-09), anything smaller a delay
  in the unit the provider documents (seconds unless its profile says milliseconds). No
  provider announces a delay of 31 years, so the epoch ranges cannot be delays.
* **Long waits need evidence** (`check_waits`): a Retry-After, or the reset of a unit at 0,
  longer than `max_pause` is believed only when the provider's quota evidence covers it: a
  quota reason in the report, or a window (announced by the headers, or documented in the
  provider's profile) at least as long as the wait. Otherwise it is capped at `max_pause`
  and named in `RateLimitHint.suspicious`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.core.headers.hint import RateLimitHint, UnitHint

__all__ = (
    "EPOCH_MILLISECONDS_MIN",
    "EPOCH_SECONDS_MIN",
    "DelayUnit",
    "check_waits",
    "has_long_wait",
    "seconds_until",
)

#: A bare reset at least this large is a unix time in seconds (1e9 s is 2001-09-09).
EPOCH_SECONDS_MIN: Final = 1e9
#: ... and at least this large, a unix time in milliseconds (also 2001-09-09).
EPOCH_MILLISECONDS_MIN: Final = 1e12
# A wait this much longer than its window is still "within" it: clocks and rounding differ.
_WINDOW_SLACK: Final = 1.0

#: The unit of a bare-number delay (not a unix time) in a provider's reset headers.
DelayUnit = Literal["seconds", "milliseconds"]


def seconds_until(number: float, now_wall: float, delay_unit: DelayUnit = "seconds") -> float:
    """Seconds until a reset given as a bare number: a unix time in ms or s, or a delay.

    :param number: the header's value, >= 0.
    :param now_wall: unix seconds when the response was received.
    :param delay_unit: the unit of a delay, as the provider documents it.
    :return: seconds from `now_wall`, never negative (a unix time in the past gives 0).
    """
    if number >= EPOCH_MILLISECONDS_MIN:
        return max(0.0, number / 1000.0 - now_wall)
    if number >= EPOCH_SECONDS_MIN:
        return max(0.0, number - now_wall)
    return number / 1000.0 if delay_unit == "milliseconds" else number


def has_long_wait(hint: RateLimitHint, max_pause: float) -> bool:
    """True when the hint asks for a wait past `max_pause` (most answers do not: one pass)."""
    if hint.retry_after is not None and hint.retry_after > max_pause:
        return True
    return any(
        unit.exhausted and unit.reset_after is not None and unit.reset_after > max_pause
        for unit in hint.units.values()
    )


def check_waits(
    hint: RateLimitHint,
    *,
    max_pause: float,
    quota_evidence: bool = False,
    windows: Mapping[str, float] | None = None,
) -> RateLimitHint:
    """`hint` with every unexplained wait longer than `max_pause` capped and named.

    :param max_pause: the longest wait believed without evidence, in seconds.
    :param quota_evidence: the report itself says a quota is spent (`insufficient_quota` ...).
    :param windows: unit -> the longest window the provider documents for it, in seconds
        (its profile); a unit's own `window` from the headers counts as well.
    """
    if quota_evidence:
        return hint
    documented = windows or {}
    suspicious: list[str] = []
    units = dict(hint.units)
    for name, unit in hint.units.items():
        reset = unit.reset_after
        if not unit.exhausted or reset is None or reset <= max_pause:
            continue
        if reset <= _longest_window(unit, documented.get(name)) + _WINDOW_SLACK:
            continue
        units[name] = _capped(unit, max_pause)
        suspicious.append(f"{name} reset {reset:g} s > max_pause {max_pause:g} s without a window")
    retry_after = hint.retry_after
    if retry_after is not None and retry_after > max_pause:
        # A Retry-After as long as a believed reset of a spent unit is that reset, restated.
        believed = [u.reset_after for u in units.values() if u.exhausted and u.reset_after is not None]
        if not believed or retry_after > max(believed) + _WINDOW_SLACK:
            suspicious.append(f"retry_after {retry_after:g} s > max_pause {max_pause:g} s")
            retry_after = max_pause
    if not suspicious:
        return hint
    primary = units.get(hint.unit)
    return hint._replace(
        retry_after=retry_after,
        units=units,
        reset_after=hint.reset_after if primary is None else primary.reset_after,
        suspicious=(*hint.suspicious, *suspicious),
    )


def _longest_window(unit: UnitHint, documented: float | None) -> float:
    known = [w for w in (unit.window, documented) if w is not None]
    return max(known) if known else 0.0


def _capped(unit: UnitHint, max_pause: float) -> UnitHint:
    return unit._replace(reset_after=max_pause)
