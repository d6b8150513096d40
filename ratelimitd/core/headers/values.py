"""Value parsers for rate-limit headers: counts, durations, dates, resets, IETF RateLimit.

Pure: no clock (`now_wall` is a parameter), no I/O. Every parser returns None (or drops
the field) for a malformed value; nothing here raises. Used by `ratelimitd.core.headers.parse`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from ratelimitd.core.headers import structured_fields as sf
from ratelimitd.core.headers.plausibility import seconds_until

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.core.headers.plausibility import DelayUnit

__all__ = (
    "parse_absolute_reset",
    "parse_count",
    "parse_duration",
    "parse_http_date",
    "parse_ietf",
    "parse_reset",
    "parse_retry_after",
    "parse_rfc3339",
    "unit_name",
)

# Longer values are malformed: no parser ever sees pathological input.
_MAX_CHARS: Final = 256
_COUNT: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Go's time.Duration.String() as OpenAI sends it: `6m0s`, `1s`, `20ms`, `1h2m3.5s`.
_DURATION: Final = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART: Final = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_MONTHS: Final = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 §5.6.7: IMF-fixdate, then the obsolete RFC 850 and asctime forms.
_IMF_FIXDATE: Final = re.compile(rf"[a-z]{{3}}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} gmt")
_RFC850: Final = re.compile(rf"[a-z]{{6,9}}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} gmt")
_ASCTIME: Final = re.compile(rf"[a-z]{{3}} {_MONTH} ([0-9 ][0-9]) {_TIME} ([0-9]{{4}})")


def _clean(value: str) -> str | None:
    text = value.strip()
    return text if text and len(text) <= _MAX_CHARS else None


def parse_count(value: str) -> float | None:
    """A non-negative decimal number (`5000`, `0`, `1.5`); None for anything else."""
    if value.isascii() and value.isdigit() and len(value) <= _MAX_CHARS:
        return float(value)  # most counts: plain digits, no regex needed
    text = _clean(value)
    if text is None or not _COUNT.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


# Durations seen before: a provider sends the same few resets (`6ms`, `1s`, `6m0s`) again
# and again. Cleared when full, so any stream of values stays bounded.
_DURATIONS: dict[str, float | None] = {}
_DURATIONS_MAX: Final = 4096


def parse_duration(value: str) -> float | None:
    """Seconds from a Go-style duration (`6m0s`, `20ms`, `1h2m3.5s`) or a plain number."""
    known = _DURATIONS.get(value, _DURATIONS)
    if known is not _DURATIONS:
        return known  # type: ignore[return-value]  # the sentinel is the dict itself
    seconds = _parse_duration(value)
    if len(_DURATIONS) >= _DURATIONS_MAX:
        _DURATIONS.clear()
    _DURATIONS[value] = seconds
    return seconds


def _parse_duration(value: str) -> float | None:
    text = _clean(value)
    if text is None:
        return None
    plain = parse_count(text)
    if plain is not None:
        return plain
    if not _DURATION.fullmatch(text):
        return None
    total = 0.0
    for number, unit in _DURATION_PART.findall(text):
        total += float(number) * _DURATION_UNITS[unit]
    return total if math.isfinite(total) else None


def parse_http_date(value: str) -> float | None:
    """Unix seconds from an HTTP-date (RFC 9110 §5.6.7, all three forms); None if invalid."""
    text = _clean(value)
    if text is None:
        return None
    text = text.lower()
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.fullmatch(text):
        day, month, short_year, hour, minute, second = match.groups()
        # Two-digit years: RFC 9110 §5.6.7 says take the most recent past century; the
        # simpler 1970-2069 split is right for every date a live server sends.
        year = str(int(short_year) + (1900 if int(short_year) >= 70 else 2000))
    elif match := _ASCTIME.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    try:
        moment = datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day.strip()),
            int(hour),
            int(minute),
            int(second),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return moment.timestamp()


def parse_rfc3339(value: str) -> float | None:
    """Unix seconds from an RFC 3339 timestamp with an offset (`2025-08-21T12:40:59Z`)."""
    text = _clean(value)
    if text is None or len(text) < 20 or text[10] not in "Tt ":
        return None
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    if moment.tzinfo is None:  # RFC 3339 requires an offset; a naive time is ambiguous
        return None
    return moment.timestamp()


def parse_retry_after(value: str, now_wall: float) -> float | None:
    """Seconds to wait from a `Retry-After` value (RFC 9110 §10.2.3); None if malformed.

    Delta-seconds (decimals tolerated) or an HTTP-date; a date in the past gives 0.
    Large values are kept: the caller caps them with its `max_pause`.
    """
    delay = parse_count(value)
    if delay is not None:
        return delay
    moment = parse_http_date(value)
    return None if moment is None else max(0.0, moment - now_wall)


def parse_reset(value: str, now_wall: float, delay_unit: DelayUnit = "seconds") -> float | None:
    """Seconds until a reset given as a delay (in `delay_unit`), a unix time in seconds
    (>= 1e9) or milliseconds (>= 1e12), or an HTTP-date (`plausibility.seconds_until`)."""
    number = parse_count(value)
    if number is None:
        moment = parse_http_date(value)
        return None if moment is None else max(0.0, moment - now_wall)
    return seconds_until(number, now_wall, delay_unit)


def parse_absolute_reset(value: str, now_wall: float) -> float | None:
    """Seconds until a reset given as RFC 3339 (Anthropic), else as `parse_reset` reads it."""
    moment = parse_rfc3339(value)
    if moment is not None:
        return max(0.0, moment - now_wall)
    return parse_reset(value, now_wall)


def unit_name(raw: str) -> str:
    """Normalise a unit name from a header: `input-tokens` -> `input_tokens`."""
    return raw.strip().lower().replace("-", "_")


# --- IETF draft-ietf-httpapi-ratelimit-headers ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Policy:
    limit: float
    window: float | None
    unit: str


def _natural(value: object, *, positive: bool = False) -> int | None:
    """`value` if it is an SF Integer >= 0 (> 0 with `positive`), else None."""
    if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
        return None
    return value


def _name(value: object) -> str | None:
    if isinstance(value, str):
        return value
    return value.value if isinstance(value, sf.Token) else None


def _policies(text: str) -> dict[str, _Policy] | None:
    """`RateLimit-Policy`: `"name";q=100;w=60` (draft 08+) or `100;w=60` (draft 07)."""
    try:
        items = sf.parse_list(text)
    except ValueError:
        return None
    out: dict[str, _Policy] = {}
    for index, item in enumerate(items):
        bare_quota = _natural(item.value)
        name: str | None = f"#{index}"
        quota: int | None = bare_quota
        if bare_quota is None:
            name, quota = _name(item.value), _natural(item.params.get("q"))
        raw_window = item.params.get("w")
        window = _natural(raw_window, positive=True)
        unit = _name(item.params.get("qu", "requests"))
        if name is None or unit is None or quota is None:
            return None
        if raw_window is not None and window is None:
            return None
        out[name] = _Policy(float(quota), None if window is None else float(window), unit_name(unit))
    return out


def _service_limits(text: str, policies: Mapping[str, _Policy]) -> list[tuple[str, dict[str, float]]] | None:
    """`RateLimit`: `"name";r=50;t=30` (draft 08+) or `limit=100, remaining=50, reset=5`.

    `r` may be missing when the server has no counter to expose, as in the draft's own
    example "Missing Remaining information" (`RateLimit: quota;t=1`): `t` still counts.
    """
    try:
        items: list[sf.Item] | None = sf.parse_list(text)
    except ValueError:
        items = None
    out: list[tuple[str, dict[str, float]]] = []
    if items is not None:
        for item in items:
            name, remaining = _name(item.value), _natural(item.params.get("r"))
            reset = _natural(item.params.get("t"))
            if name is None or ("r" in item.params and remaining is None):
                return None
            if ("t" in item.params and reset is None) or (remaining is None and reset is None):
                return None
            values: dict[str, float] = {}
            if remaining is not None:
                values["remaining"] = float(remaining)
            if reset is not None:
                values["reset"] = float(reset)
            policy = policies.get(name)
            if policy is not None:
                values["limit"] = policy.limit
                if policy.window is not None:
                    values["window"] = policy.window
            out.append((policy.unit if policy else "requests", values))
        return out
    try:
        members = sf.parse_dictionary(text)
    except ValueError:
        return None
    values = {}
    for key in ("limit", "remaining", "reset"):
        if key in members:
            number = _natural(members[key].value)
            if number is None:
                return None
            values[key] = float(number)
    if "limit" not in values and "remaining" not in values:
        return None
    _window_from_policies(values, policies)
    return [("requests", values)]


def _window_from_policies(values: dict[str, float], policies: Mapping[str, _Policy]) -> None:
    """Draft 07: the policy whose quota equals the expiring limit gives its window."""
    for policy in policies.values():
        if policy.limit == values.get("limit") and policy.window is not None:
            values.setdefault("window", policy.window)
            return


def _separate_fields(
    fields: Mapping[str, str], policies: Mapping[str, _Policy], now_wall: float, bad: list[str]
) -> dict[str, float]:
    """Drafts 00-06: `RateLimit-Limit` (`10` or `10, 10;w=1, 50;w=60`), `-Remaining`, `-Reset`."""
    values: dict[str, float] = {}
    if "ratelimit-limit" in fields:
        try:
            items = sf.parse_list(fields["ratelimit-limit"])
        except ValueError:
            items = []
        limit = _natural(items[0].value) if items else None
        if limit is not None:
            values["limit"] = float(limit)
            for item in items:
                window = _natural(item.params.get("w"), positive=True)
                if item.value == limit and window is not None:
                    values["window"] = float(window)
                    break
        else:
            bad.append("ratelimit-limit")
    for name, key in (("ratelimit-remaining", "remaining"), ("ratelimit-reset", "reset")):
        if name in fields:
            raw = fields[name]
            parsed = parse_count(raw) if key == "remaining" else parse_reset(raw, now_wall)
            if parsed is None:
                bad.append(name)
            else:
                values[key] = parsed
    if "limit" in values:
        _window_from_policies(values, policies)
    return values


def parse_ietf(fields: Mapping[str, str], now_wall: float) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The IETF fields (lower-cased names) -> (unit -> values, malformed field names).

    Several policies for one unit collapse to one: the one with the lowest remaining
    (draft 07 §4: servers report "the time window with the lower remaining"), else
    the one with the lowest sustained rate `q / w`.
    """
    bad: list[str] = []
    policies: dict[str, _Policy] = {}
    if "ratelimit-policy" in fields:
        parsed = _policies(fields["ratelimit-policy"])
        if parsed is None:
            bad.append("ratelimit-policy")
        else:
            policies = parsed
    candidates: list[tuple[str, dict[str, float]]] = []
    if "ratelimit" in fields:
        limits = _service_limits(fields["ratelimit"], policies)
        if limits is None:
            bad.append("ratelimit")
        else:
            candidates.extend(limits)
    separate = _separate_fields(fields, policies, now_wall, bad)
    if separate:
        candidates.append(("requests", separate))
    used = {(unit, values.get("limit"), values.get("window")) for unit, values in candidates}
    for policy in policies.values():
        if (policy.unit, policy.limit, policy.window) not in used:
            policy_values = {"limit": policy.limit}
            if policy.window is not None:
                policy_values["window"] = policy.window
            candidates.append((policy.unit, policy_values))
    chosen: dict[str, dict[str, float]] = {}
    for unit in dict.fromkeys(unit for unit, _ in candidates):
        options = [values for u, values in candidates if u == unit]
        live = [v for v in options if "remaining" in v]
        if live:
            chosen[unit] = min(live, key=lambda v: (v["remaining"], -v.get("reset", 0.0)))
        else:
            chosen[unit] = min(options, key=_sustained_rate)
    return chosen, bad


def _sustained_rate(values: Mapping[str, float]) -> float:
    window = values.get("window")
    return values["limit"] / window if window else math.inf
