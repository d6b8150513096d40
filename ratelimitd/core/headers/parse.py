"""Rate-limit response headers -> one typed `RateLimitHint`.

Pure: no clock, no I/O. `now_wall` (unix seconds) turns absolute resets into relative
seconds. Malformed values never raise: they are dropped and named in `malformed_names`.
Supported header families and how each maps into the hint: docs/headers.md.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from ratelimitd.core.headers import structured_fields as sf
from ratelimitd.core.headers import values as hv
from ratelimitd.core.headers.conventions import DEFAULT_CONVENTIONS, HeaderConventions
from ratelimitd.core.headers.hint import DEFAULT_LONG_RESET_THRESHOLD, HintKind, RateLimitHint, UnitHint
from ratelimitd.core.headers.plausibility import check_waits, has_long_wait
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
    "HeaderConventions",
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
_LIST_FIELDS: Final = frozenset({"ratelimit", "ratelimit-policy", "ratelimit-limit", "x-ratelimit-limit"})


class _Collector:
    """Accumulates observations per family and unit, and the malformed header names."""

    def __init__(self, now_wall: float, conventions: HeaderConventions) -> None:
        self.now_wall = now_wall
        self.conventions = conventions
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
    conventions: HeaderConventions | None = None,
    max_pause: float | None = None,
    quota_evidence: bool = False,
) -> RateLimitHint:
    """Parse raw response headers into a `RateLimitHint`. Never raises on bad values.

    :param headers: response headers; names are matched case-insensitively.
    :param status: the HTTP status of the response, if known (403/429 classification).
    :param now_wall: unix seconds at which the response was received; HTTP-dates,
        RFC 3339 and epoch resets become seconds relative to it (never negative).
    :param trust: header families to use (see `FAMILIES`); None trusts all. Families seen
        but not trusted are listed in `ignored_families` and contribute nothing.
    :param conventions: what the provider's documentation says its headers mean (delay
        unit, windows); None reads every family by its defaults.
    :param max_pause: when given, a wait longer than this without quota evidence is capped
        and named in `suspicious` (`plausibility.check_waits`).
    :param quota_evidence: the report says a quota is spent (a quota reason): long waits
        are believed.
    """
    conv = DEFAULT_CONVENTIONS if conventions is None else conventions
    fields, bad_names = _fold(headers)
    col = _Collector(now_wall, conv)
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
                units[unit] = _unit_hint(family, unit, values, conv)
    families = {f for f in col.observed if f in trusted}
    if retry_after is not None:
        families.add(FAMILY_RETRY_AFTER)
    primary = _primary_unit(units)
    main = units.get(primary, UnitHint())
    hint = RateLimitHint(
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
    if max_pause is None or not has_long_wait(hint, max_pause):
        return hint
    return check_waits(
        hint, max_pause=max_pause, quota_evidence=quota_evidence, windows=conv.evidence_windows()
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
        if key == "limit":
            _put_limit_list(value, col)
            continue
        delay_unit = col.conventions.delay_unit
        parsed = hv.parse_reset(value, col.now_wall, delay_unit) if key == "reset" else hv.parse_count(value)
        col.put(FAMILY_GITHUB, "requests", key, name, parsed)
    resource = fields.get("x-ratelimit-resource", "").strip().lower()
    if resource:
        col.seen.add(FAMILY_GITHUB)
        col.resource = resource
        if resource in _GITHUB_WINDOWS and FAMILY_GITHUB in col.observed:
            col.put(FAMILY_GITHUB, "requests", "window", "", _GITHUB_WINDOWS[resource])


def _put_limit_list(value: str, col: _Collector) -> None:
    """`X-RateLimit-Limit`: a count (`5000`), or a list of policies as in
    draft-ietf-httpapi-ratelimit-headers-00 (`100, 100;window=60, 10000;window=86400`): the
    first member is the limit that `-Remaining` and `-Reset` describe, and its window is its
    own `window`/`w` parameter or that of the later member with the same count."""
    name = "x-ratelimit-limit"
    plain = hv.parse_count(value)
    if plain is not None:
        col.put(FAMILY_GITHUB, "requests", "limit", name, plain)
        return
    try:
        items = sf.parse_list(value)
    except ValueError:
        items = []
    first = _policy_count(items[0]) if items else None
    if first is None:
        col.put(FAMILY_GITHUB, "requests", "limit", name, None)
        return
    col.put(FAMILY_GITHUB, "requests", "limit", name, first)
    for item in items:
        window = _policy_window(item)
        if _policy_count(item) == first and window is not None:
            col.put(FAMILY_GITHUB, "requests", "window", name, window)
            return


def _policy_count(item: sf.Item) -> float | None:
    value = item.value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def _policy_window(item: sf.Item) -> float | None:
    for key in ("window", "w"):
        value = item.params.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


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
            parsed = hv.parse_reset(value, col.now_wall, col.conventions.delay_unit)
        else:
            parsed = hv.parse_count(value)
        col.put(FAMILY_CROSSREF, "requests", key, name, parsed)


def _unit_hint(
    family: str, unit: str, values: Mapping[str, float], conventions: HeaderConventions
) -> UnitHint:
    window = values.get("window")
    assumed = False
    if window is None and "limit" in values:
        # The provider's documented window for this unit (Groq: requests per day), else
        # OpenAI's and Anthropic's documented minute.
        documented = conventions.windows.get(unit)
        if documented is None and family in (FAMILY_OPENAI, FAMILY_ANTHROPIC):
            documented = _PER_MINUTE
        if documented is not None:
            window, assumed = documented, True
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
