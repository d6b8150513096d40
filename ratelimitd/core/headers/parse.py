"""Rate-limit response headers -> one typed `RateLimitHint`.

Pure: no clock, no I/O. `now_wall` (unix seconds) turns absolute resets into relative
seconds. Malformed values never raise: they are dropped and named in `malformed_names`.
Supported header families and how each maps into the hint: docs/headers.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ratelimitd.core.headers import structured_fields as sf
from ratelimitd.core.headers import values as hv
from ratelimitd.core.headers.conventions import DEFAULT_CONVENTIONS, HeaderConventions
from ratelimitd.core.headers.families import (
    CROSSREF_NAMES,
    FAMILIES,
    FAMILY_ANTHROPIC,
    FAMILY_CROSSREF,
    FAMILY_GITHUB,
    FAMILY_IETF,
    FAMILY_OPENAI,
    FAMILY_RETRY_AFTER,
    GITHUB_NAMES,
    GITHUB_RESOURCE,
    GITHUB_WINDOWS,
    IETF_NAMES,
    LIST_FIELDS,
    PRIORITY,
    RETRY_NAMES,
    documented_window,
    llm_name,
    primary_unit,
)
from ratelimitd.core.headers.hint import DEFAULT_LONG_RESET_THRESHOLD, HintKind, RateLimitHint, UnitHint
from ratelimitd.core.headers.plan import planned
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
    "parse_headers_general",
    "parse_retry_after",
)


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

    A dict whose header names came before in the same order is read by the plan compiled for
    that shape (`plan.py`); the result is always that of `parse_headers_general`.

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
    if type(headers) is dict:  # what the daemon's reports carry; other mappings: general path
        found = planned(headers, status, now_wall, trust, conv)
        if found is not None:
            hint, longest = found
            if max_pause is None or longest <= max_pause:
                return hint  # no wait past max_pause: nothing to check
            return _checked(hint, conv, max_pause, quota_evidence)
    return parse_headers_general(
        headers,
        status=status,
        now_wall=now_wall,
        trust=trust,
        conventions=conventions,
        max_pause=max_pause,
        quota_evidence=quota_evidence,
    )


def parse_headers_general(
    headers: Mapping[str, str],
    *,
    status: int | None,
    now_wall: float,
    trust: frozenset[str] | None = None,
    conventions: HeaderConventions | None = None,
    max_pause: float | None = None,
    quota_evidence: bool = False,
) -> RateLimitHint:
    """`parse_headers` the general way, for every input, without a compiled plan: the reference
    the plans are tested against, and the path of every shape a plan does not cover. The
    parameters and the result are `parse_headers`'s."""
    conv = DEFAULT_CONVENTIONS if conventions is None else conventions
    fields, bad_names = _fold(headers)
    col = _Collector(now_wall, conv)
    col.malformed.extend(bad_names)
    retry_after = _parse_retry(fields, col)
    _parse_llm(fields, col)
    _parse_github(fields, col)
    _parse_crossref(fields, col)
    if not fields.keys().isdisjoint(IETF_NAMES):
        col.seen.add(FAMILY_IETF)
        ietf_units, bad = parse_ietf(fields, now_wall)
        col.malformed.extend(bad)
        for unit, values in ietf_units.items():
            col.observed.setdefault(FAMILY_IETF, {})[unit] = values
    trusted = FAMILIES if trust is None else trust
    if FAMILY_RETRY_AFTER not in trusted:
        retry_after = None
    units: dict[str, UnitHint] = {}
    for family in PRIORITY:
        if family not in trusted:
            continue
        for unit, values in col.observed.get(family, {}).items():
            if unit not in units:
                units[unit] = _unit_hint(family, unit, values, conv)
    families = {f for f in col.observed if f in trusted}
    if retry_after is not None:
        families.add(FAMILY_RETRY_AFTER)
    primary = primary_unit(units)
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
    if max_pause is None:
        return hint
    return _checked(hint, conv, max_pause, quota_evidence)


def _checked(
    hint: RateLimitHint, conv: HeaderConventions, max_pause: float, quota_evidence: bool
) -> RateLimitHint:
    """`hint` with its waits past `max_pause` checked (`plausibility.check_waits`)."""
    if not has_long_wait(hint, max_pause):
        return hint
    windows = conv.evidence_windows()
    return check_waits(hint, max_pause=max_pause, quota_evidence=quota_evidence, windows=windows)


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
        elif name in LIST_FIELDS:
            fields[name] = f"{fields[name]}, {value}"
        elif fields[name].strip() != value.strip():
            conflicting.add(name)
    for name in conflicting:
        del fields[name]
    return fields, sorted(conflicting)


def _parse_retry(fields: Mapping[str, str], col: _Collector) -> float | None:
    """Retry-After family: the most precise valid header wins (`retry-after-ms` first)."""
    found: float | None = None
    for name in RETRY_NAMES:
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


def _parse_llm(fields: Mapping[str, str], col: _Collector) -> None:
    """OpenAI `x-ratelimit-{limit,remaining,reset}-<unit>` and `anthropic-ratelimit-*`."""
    for name, value in fields.items():
        found = llm_name(name)
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
    for name in fields.keys() & GITHUB_NAMES:
        key = name.removeprefix("x-ratelimit-")
        value = fields[name]
        if key == "limit":
            _put_limit_list(value, col)
            continue
        delay_unit = col.conventions.delay_unit
        parsed = hv.parse_reset(value, col.now_wall, delay_unit) if key == "reset" else hv.parse_count(value)
        col.put(FAMILY_GITHUB, "requests", key, name, parsed)
    resource = fields.get(GITHUB_RESOURCE, "").strip().lower()
    if resource:
        col.seen.add(FAMILY_GITHUB)
        col.resource = resource
        if resource in GITHUB_WINDOWS and FAMILY_GITHUB in col.observed:
            col.put(FAMILY_GITHUB, "requests", "window", "", GITHUB_WINDOWS[resource])


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
    for name in fields.keys() & CROSSREF_NAMES:
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
        documented = documented_window(family, unit, conventions)
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
