"""Rate-limit response headers -> one typed `RateLimitHint`.

Pure: no clock, no I/O. `now_wall` (unix seconds) turns absolute resets into relative
seconds. Malformed values never raise: they are dropped and named in `malformed_names`.
Supported header families and how each maps into the hint: docs/headers.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from ratelimitd.core.headers import values as hv
from ratelimitd.core.headers.values import parse_ietf, parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "DEFAULT_LONG_RESET_THRESHOLD",
    "FAMILIES",
    "FAMILY_ANTHROPIC",
    "FAMILY_CROSSREF",
    "FAMILY_GITHUB",
    "FAMILY_IETF",
    "FAMILY_OPENAI",
    "FAMILY_RETRY_AFTER",
    "HintKind",
    "RateLimitHint",
    "UnitHint",
    "parse_headers",
    "parse_retry_after",
)

FAMILY_RETRY_AFTER: Final = "retry_after"
FAMILY_OPENAI: Final = "openai"
FAMILY_ANTHROPIC: Final = "anthropic"
FAMILY_GITHUB: Final = "github"
FAMILY_IETF: Final = "ietf"
FAMILY_CROSSREF: Final = "crossref"
FAMILIES: Final = frozenset(
    {
        FAMILY_RETRY_AFTER,
        FAMILY_OPENAI,
        FAMILY_ANTHROPIC,
        FAMILY_GITHUB,
        FAMILY_IETF,
        FAMILY_CROSSREF,
    }
)
# When two trusted families describe the same unit, the first one here wins (whole
# unit, so a limit is never paired with another family's window).
_PRIORITY: Final = (FAMILY_ANTHROPIC, FAMILY_OPENAI, FAMILY_GITHUB, FAMILY_CROSSREF, FAMILY_IETF)

#: A remaining of 0 with a reset further away than this is a quota, not a rate.
DEFAULT_LONG_RESET_THRESHOLD: Final = 3600.0
# OpenAI and Anthropic document their limits per minute; the headers do not say it.
_PER_MINUTE: Final = 60.0
# GitHub `x-ratelimit-resource` -> window, from docs.github.com "Rate limits for the REST
# API" (core: per hour) and "Search" (search: 30/minute, code_search: 10/minute).
_GITHUB_WINDOWS: Final = {"core": 3600.0, "graphql": 3600.0, "search": 60.0, "code_search": 60.0}

_OPENAI_NAME: Final = re.compile(r"x-ratelimit-(limit|remaining|reset)-([a-z0-9_-]+)")
_ANTHROPIC_NAME: Final = re.compile(r"anthropic-ratelimit-([a-z0-9_-]+?)-(limit|remaining|reset)")
_RETRY_NAMES: Final = ("retry-after-ms", "x-amz-retry-after", "retry-after")  # precision first
_GITHUB_NAMES: Final = frozenset(
    {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-used"}
)
_CROSSREF_NAMES: Final = frozenset(
    {"x-rate-limit-limit", "x-rate-limit-interval", "x-rate-limit-remaining", "x-rate-limit-reset"}
)
_IETF_NAMES: Final = frozenset(
    {"ratelimit", "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"}
)
_LIST_FIELDS: Final = frozenset({"ratelimit", "ratelimit-policy", "ratelimit-limit"})

HintKind = Literal["ok", "rate_limited", "quota_exhausted"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitHint:
    """What one family said about one unit (`requests`, `tokens`, `input_tokens`, ...).

    `reset_after` is seconds until the provider refills (relative to the response);
    `window` is the period `limit` applies to, in seconds; `window_assumed` is true when
    the window comes from the provider's documentation, not from the response itself.
    """

    limit: float | None = None
    remaining: float | None = None
    reset_after: float | None = None
    window: float | None = None
    window_assumed: bool = False
    used: float | None = None
    family: str | None = None

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


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitHint:
    """What a provider's response headers said, normalised.

    Times are relative seconds from when the response was received. `units` holds the
    per-unit view; the flat `limit`/`remaining`/`reset_after`/`window`/`unit` fields
    mirror its primary unit (`requests` when present) for callers that want one number.
    Building a hint from the flat fields alone fills `units` with that one unit.
    """

    retry_after: float | None = None
    limit: float | None = None
    remaining: float | None = None
    reset_after: float | None = None
    window: float | None = None
    unit: str = "requests"
    malformed: int = 0
    units: Mapping[str, UnitHint] = field(default_factory=dict)
    families: frozenset[str] = frozenset()
    ignored_families: frozenset[str] = frozenset()
    malformed_names: tuple[str, ...] = ()
    status: int | None = None
    resource: str | None = None

    def __post_init__(self) -> None:
        flat = (self.limit, self.remaining, self.reset_after, self.window)
        if not self.units and any(value is not None for value in flat):
            only = UnitHint(
                limit=self.limit,
                remaining=self.remaining,
                reset_after=self.reset_after,
                window=self.window,
            )
            object.__setattr__(self, "units", {self.unit: only})

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


class _Collector:
    """Accumulates observations per family and unit, and the malformed header names."""

    def __init__(self, now_wall: float) -> None:
        self.now_wall = now_wall
        self.observed: dict[str, dict[str, dict[str, float]]] = {}
        self.seen: set[str] = set()
        self.malformed: list[str] = []
        self.resource: str | None = None

    def put(self, family: str, unit: str, key: str, name: str, value: float | None) -> None:
        """Record `key` of `unit`; None means the header `name` was malformed."""
        self.seen.add(family)
        if value is None:
            self.malformed.append(name)
            return
        self.observed.setdefault(family, {}).setdefault(unit, {})[key] = value


def parse_headers(
    headers: Mapping[str, str],
    *,
    status: int | None,
    now_wall: float,
    trust: frozenset[str] | None = None,
) -> RateLimitHint:
    """Parse raw response headers into a `RateLimitHint`. Never raises on bad values.

    :param headers: response headers; names are matched case-insensitively.
    :param status: the HTTP status of the response, if known (403/429 classification).
    :param now_wall: unix seconds at which the response was received; HTTP-dates,
        RFC 3339 and epoch resets become seconds relative to it (never negative).
    :param trust: header families to use (see `FAMILIES`); None trusts all. Families seen
        but not trusted are listed in `ignored_families` and contribute nothing.
    """
    fields, bad_names = _fold(headers)
    col = _Collector(now_wall)
    col.malformed.extend(bad_names)
    retry_after = _parse_retry(fields, col)
    _parse_llm(fields, col)
    _parse_github(fields, col)
    _parse_crossref(fields, col)
    if not fields.keys().isdisjoint(_IETF_NAMES):
        col.seen.add(FAMILY_IETF)
        ietf_units, bad = parse_ietf(fields, now_wall)
        col.malformed.extend(bad)
        for unit, values in ietf_units.items():
            col.observed.setdefault(FAMILY_IETF, {})[unit] = values
    trusted = FAMILIES if trust is None else trust
    if FAMILY_RETRY_AFTER not in trusted:
        retry_after = None
    units: dict[str, UnitHint] = {}
    for family in _PRIORITY:
        if family not in trusted:
            continue
        for unit, values in col.observed.get(family, {}).items():
            if unit not in units:
                units[unit] = _unit_hint(family, values)
    families = {f for f in col.observed if f in trusted}
    if retry_after is not None:
        families.add(FAMILY_RETRY_AFTER)
    primary = _primary_unit(units)
    main = units.get(primary, UnitHint())
    return RateLimitHint(
        retry_after=retry_after,
        limit=main.limit,
        remaining=main.remaining,
        reset_after=main.reset_after,
        window=main.window,
        unit=primary,
        malformed=len(col.malformed),
        units=units,
        families=frozenset(families),
        ignored_families=frozenset(col.seen - trusted),
        malformed_names=tuple(col.malformed),
        status=status,
        resource=col.resource if FAMILY_GITHUB in trusted else None,
    )


def _fold(headers: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Lower-case names; same-name list fields combine (RFC 9110 §5.3), others must agree."""
    fields: dict[str, str] = {}
    conflicting: set[str] = set()
    for raw_name, raw_value in headers.items():
        name = raw_name.strip().lower()
        # A field value excludes its leading and trailing whitespace (RFC 9110 §5.5); a
        # structured field parser must not see it (a tab at the edge fails RFC 9651 parsing).
        value = raw_value.strip(" \t")
        if name not in fields:
            fields[name] = value
        elif name in _LIST_FIELDS:
            fields[name] = f"{fields[name]}, {value}"
        elif fields[name].strip() != value.strip():
            conflicting.add(name)
    for name in conflicting:
        del fields[name]
    return fields, sorted(conflicting)


def _parse_retry(fields: Mapping[str, str], col: _Collector) -> float | None:
    """Retry-After family: the most precise valid header wins (`retry-after-ms` first)."""
    found: float | None = None
    for name in _RETRY_NAMES:
        if name not in fields:
            continue
        col.seen.add(FAMILY_RETRY_AFTER)
        if name == "retry-after":
            value = parse_retry_after(fields[name], col.now_wall)
        else:
            millis = hv.parse_count(fields[name])
            value = None if millis is None else millis / 1000.0
        if value is None:
            col.malformed.append(name)
        elif found is None:
            found = value
    return found


# Header name -> (family, key, unit) for the OpenAI and Anthropic families, None for any
# other name. Responses repeat the same names, so each is matched once; bounded.
_LLM_NAMES: dict[str, tuple[str, str, str] | None] = {}
_LLM_NAMES_MAX: Final = 4096


def _llm_name(name: str) -> tuple[str, str, str] | None:
    if match := _OPENAI_NAME.fullmatch(name):
        found: tuple[str, str, str] | None = (FAMILY_OPENAI, match.group(1), hv.unit_name(match.group(2)))
    elif match := _ANTHROPIC_NAME.fullmatch(name):
        found = (FAMILY_ANTHROPIC, match.group(2), hv.unit_name(match.group(1)))
    else:
        found = None
    if len(_LLM_NAMES) >= _LLM_NAMES_MAX:
        _LLM_NAMES.clear()
    _LLM_NAMES[name] = found
    return found


def _parse_llm(fields: Mapping[str, str], col: _Collector) -> None:
    """OpenAI `x-ratelimit-{limit,remaining,reset}-<unit>` and `anthropic-ratelimit-*`."""
    names = _LLM_NAMES
    for name, value in fields.items():
        known = names.get(name, names)
        found = _llm_name(name) if known is names else known
        if found is None:
            continue
        family, key, unit = found
        if key != "reset":
            parsed = hv.parse_count(value)
        elif family == FAMILY_OPENAI:
            parsed = hv.parse_duration(value)
        else:
            parsed = hv.parse_absolute_reset(value, col.now_wall)
        col.put(family, unit, key, name, parsed)


def _parse_github(fields: Mapping[str, str], col: _Collector) -> None:
    """GitHub-style `x-ratelimit-{limit,remaining,reset,used,resource}` (requests)."""
    for name in _GITHUB_NAMES & fields.keys():
        key = name.removeprefix("x-ratelimit-")
        value = fields[name]
        parsed = hv.parse_reset(value, col.now_wall) if key == "reset" else hv.parse_count(value)
        col.put(FAMILY_GITHUB, "requests", key, name, parsed)
    resource = fields.get("x-ratelimit-resource", "").strip().lower()
    if resource:
        col.seen.add(FAMILY_GITHUB)
        col.resource = resource
        if resource in _GITHUB_WINDOWS and FAMILY_GITHUB in col.observed:
            col.put(FAMILY_GITHUB, "requests", "window", "", _GITHUB_WINDOWS[resource])


def _parse_crossref(fields: Mapping[str, str], col: _Collector) -> None:
    """Crossref `x-rate-limit-limit` + `x-rate-limit-interval` (and Okta-style extras)."""
    for name in _CROSSREF_NAMES & fields.keys():
        key = name.removeprefix("x-rate-limit-")
        value = fields[name]
        if key == "interval":
            parsed = hv.parse_duration(value)
            key = "window"
            if parsed is not None and parsed <= 0:
                parsed = None
        elif key == "reset":
            parsed = hv.parse_reset(value, col.now_wall)
        else:
            parsed = hv.parse_count(value)
        col.put(FAMILY_CROSSREF, "requests", key, name, parsed)


def _unit_hint(family: str, values: Mapping[str, float]) -> UnitHint:
    window = values.get("window")
    assumed = False
    if window is None and family in (FAMILY_OPENAI, FAMILY_ANTHROPIC) and "limit" in values:
        window, assumed = _PER_MINUTE, True
    return UnitHint(
        limit=values.get("limit"),
        remaining=values.get("remaining"),
        reset_after=values.get("reset"),
        window=window,
        window_assumed=assumed,
        used=values.get("used"),
        family=family,
    )


def _primary_unit(units: Mapping[str, UnitHint]) -> str:
    """`requests` if present; else the exhausted unit with the longest reset; else the first."""
    if "requests" in units or not units:
        return "requests"
    exhausted = [(h.reset_after or 0.0, name) for name, h in units.items() if h.exhausted]
    if exhausted:
        return max(exhausted)[1]
    return next(iter(units))
