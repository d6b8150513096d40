"""Rate-limit headers parsed by a plan compiled once per header-name shape.

A provider sends the same header names in the same order on every response; only the values
change. So the first responses of a shape are read the general way (`parse.parse_headers_general`),
the second compiles a `_Plan` (which header feeds which unit, key and value parser, what the
hint's families are), and later responses only read values: under a third of the general
path's time.

A plan only covers shapes and values whose result it can give exactly as the general path
would. Everything else returns None and is read by the general path: shapes with IETF
structured fields, names that collide after folding, and any value that does not read
cleanly as a plain number or duration (a list-valued GitHub limit, an HTTP-date; a malformed
value, which must be counted and named there). Pure: no clock, no I/O. The caches are
bounded (cleared when full).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

from ratelimitd.core.headers import values as hv

# At run time, not only for the type checker: compiled (tools/compiled.py), the `_Plan`
# dataclass evaluates its field annotations.
from ratelimitd.core.headers.conventions import HeaderConventions  # noqa: TC001
from ratelimitd.core.headers.families import (
    CROSSREF_NAMES,
    FAMILIES,
    FAMILY_CROSSREF,
    FAMILY_GITHUB,
    FAMILY_OPENAI,
    FAMILY_RETRY_AFTER,
    GITHUB_NAMES,
    GITHUB_RESOURCE,
    GITHUB_WINDOWS,
    IETF_NAMES,
    PRIORITY,
    RETRY_NAMES,
    documented_window,
    llm_name,
    primary_unit,
)
from ratelimitd.core.headers.hint import RateLimitHint, UnitHint
from ratelimitd.core.headers.plausibility import DelayUnit, seconds_until

#: Reads one raw value (relative to `now_wall`); None when malformed.
Reader = Callable[[str, float], float | None]
#: A container's items at fixed keys (an `itemgetter` that always gives a tuple).
Getter = Callable[[Any], tuple[Any, ...]]

__all__ = ("planned",)

_Key = tuple[tuple[str, ...], frozenset[str] | None, int]
# Plans by (raw header names in order, trust, id(conventions)); None: the general path.
# A plan holds its conventions, so their id cannot be reused while the plan is cached.
_PLANS: dict[_Key, _Plan | None] = {}
# Shapes seen once: compiled when seen again, so that a client sending a new set of names
# every time pays the general path only, not a compilation as well (about 19 µs) each time.
_SEEN: dict[_Key, None] = {}
_PLANS_MAX: Final = 1024
# Raw duration value -> seconds (`6ms`, `1s`: a provider repeats a few); valid ones only.
_SECONDS: dict[str, float] = {}
# Raw RFC 3339 reset -> unix seconds (Anthropic: the same instant for a whole window).
_MOMENTS: dict[str, float] = {}
_VALUES_MAX: Final = 4096
# Longer concatenated counts take the one-by-one path (`values.parse_count`'s own bound).
_MAX_DIGITS: Final = 256
# Builds a hint or a unit from its fields' tuple, without `__new__`'s keyword handling.
_new: Final = tuple.__new__
_KEYS: Final = ("limit", "remaining", "reset", "used")
# Whether this module runs compiled (tools/compiled.py): an extension module's file is not
# its source. Chooses between two ways of reading counts that give the same floats.
COMPILED: Final = not __file__.endswith(".py")
# Values known only once a response is read, placed after the parsed ones in the vector.
_RUNTIME: Final = ("retry_after", "resource", "github_window", "github_window_assumed", "status", "units")


@dataclass(frozen=True, slots=True)
class _Plan:
    """One header-name shape, compiled.

    Running it builds one value vector: the parsed counts, durations and timed values (in
    that order), then the `_RUNTIME` values, then the plan's constants (documented windows,
    family names, the hint's families, None for keys not sent). Each unit and the hint are
    then one `itemgetter` over the vector: no per-field Python code per report.
    """

    conventions: HeaderConventions  # held so that its id in the cache key stays its own
    counts: Getter
    durations: Getter
    timed: Getter
    timed_readers: tuple[Reader, ...]
    delays: tuple[int, ...]  # counts that are resets: a delay in `delay_unit` or a unix time
    delay_unit: DelayUnit
    resource: str | None  # the raw name of `x-ratelimit-resource`
    github_window: float | None  # GitHub's documented window when no resource names one
    retry: int  # the index of the winning Retry-After, -1 when none is sent or trusted
    retry_divisor: float  # 1000.0 for `retry-after-ms` and `x-amz-retry-after`
    constants: tuple[object, ...]
    units: tuple[tuple[str, Getter], ...]  # unit name, its `UnitHint` fields
    units_at: int  # where the units go in the vector, for the hint
    hint: Getter | None  # the `RateLimitHint` fields; None: the primary unit needs the values
    waits: Getter  # the resets of units that can be at 0, and the Retry-After
    families: frozenset[str]
    ignored_families: frozenset[str]
    resource_trusted: bool


def planned(
    headers: dict[str, str],
    status: int | None,
    now_wall: float,
    trust: frozenset[str] | None,
    conventions: HeaderConventions,
) -> tuple[RateLimitHint, float] | None:
    """The hint by the shape's plan and its longest wait (a reset or the Retry-After; 0.0 for
    none), so that most answers skip the long-wait check; None: use the general path."""
    key = (tuple(headers), trust, id(conventions))
    try:
        plan = _PLANS[key]
    except KeyError:
        plan = _learn(key, conventions)
    except TypeError:  # an unhashable trust (a set): no plan
        return None
    return None if plan is None else _run(plan, headers, status, now_wall)


def _learn(key: _Key, conventions: HeaderConventions) -> _Plan | None:
    """A shape's plan from its second sighting on; None (the general path) before."""
    if key not in _SEEN:
        if len(_SEEN) >= _PLANS_MAX:
            _SEEN.clear()
        _SEEN[key] = None
        return None
    del _SEEN[key]
    plan = _compile(key[0], key[1], conventions)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def _run(
    plan: _Plan, headers: dict[str, str], status: int | None, now_wall: float
) -> tuple[RateLimitHint, float] | None:
    """Read the values into the plan's vector, then build the units and the hint from it."""
    raw = plan.counts(headers)
    # Plain digits (nearly every count): `values.parse_count` reads them so.
    counts = _digit_counts(raw) if COMPILED else _plain_counts(raw)
    if counts is None:
        counts = _counts(raw)
        if counts is None:
            return None  # a malformed count
    vec = counts
    for i in plan.delays:
        vec[i] = seconds_until(vec[i], now_wall, plan.delay_unit)  # type: ignore[arg-type]
    raw = plan.durations(headers)
    if raw:
        seconds = list(map(_SECONDS.get, raw))
        if None in seconds:  # not all remembered
            found = _durations(raw)
            if found is None:
                return None
            seconds = found
        vec += seconds
    if plan.timed_readers:
        for read, value in zip(plan.timed_readers, plan.timed(headers), strict=True):
            number = read(value, now_wall)
            if number is None:
                return None
            vec.append(number)
    maybe_spent = 0.0 in vec
    retry_after = None if plan.retry < 0 else vec[plan.retry] / plan.retry_divisor  # type: ignore[operator]
    resource = window = None
    assumed = False
    if plan.resource is not None:
        resource = headers[plan.resource].strip().lower()
        if not resource:
            return None  # an empty resource is no resource: the general path says so
        window = GITHUB_WINDOWS.get(resource)
        if window is None:
            window, assumed = plan.github_window, plan.github_window is not None
    vec += (retry_after, resource, window, assumed, status, None)  # `_RUNTIME`; units below
    vec += plan.constants
    units: dict[str, UnitHint] = {}
    for name, fields in plan.units:
        units[name] = _new(UnitHint, fields(vec))
    vec[plan.units_at] = units
    # Only a Retry-After or the reset of a unit at 0 can be a long wait (`has_long_wait`),
    # and a unit at 0 needs a value read as 0 (checked before the constants join the vector).
    longest: float = max(plan.waits(vec)) if maybe_spent else retry_after or 0.0
    if plan.hint is not None:
        return _new(RateLimitHint, plan.hint(vec)), longest
    unit = primary_unit(units)
    main = units.get(unit, UnitHint())
    flat = (retry_after, main.limit, main.remaining, main.reset_after, main.window, unit, 0, units)
    github = resource if plan.resource_trusted else None
    rest = (plan.families, plan.ignored_families, (), status, github, ())
    return _new(RateLimitHint, (*flat, *rest)), longest


def _plain_counts(raw: tuple[str, ...]) -> list[object] | None:
    """Counts that are all plain ASCII digits, read in one pass; None otherwise."""
    joined = "".join(raw)
    if len(joined) <= _MAX_DIGITS and joined.isdigit() and joined.isascii() and all(raw):
        return list(map(float, map(int, raw)))  # int() first: twice as fast as float()
    return None


def _digit_counts(raw: tuple[str, ...]) -> list[object] | None:
    """`_plain_counts` digit by digit. Compiled, this loop runs in C and takes half the time
    of `int()`, which first copies each string to ASCII; interpreted, it is slower."""
    if not raw:
        return None  # as `_plain_counts`: no digits at all
    out: list[object] = []
    total = 0
    for text in raw:
        total += len(text)
        if not text or total > _MAX_DIGITS:
            return None
        number = 0
        for char in text:
            digit = ord(char) - 48
            if digit < 0 or digit > 9:
                return None
            number = number * 10 + digit
        out.append(float(number))
    return out


def _counts(raw: tuple[str, ...]) -> list[object] | None:
    """Counts one by one, as the general path reads them (when not all are plain digits)."""
    out: list[object] = []
    for value in raw:
        number = hv.parse_count(value.strip(" \t"))
        if number is None:
            return None
        out.append(number)
    return out


def _durations(raw: tuple[str, ...]) -> list[float | None] | None:
    out: list[float | None] = []
    for value in raw:
        seconds = hv.parse_duration(value.strip(" \t"))
        if seconds is None:
            return None
        _remember(_SECONDS, value, seconds)
        out.append(seconds)
    return out


def _remember(cache: dict[str, float], value: str, number: float) -> None:
    if len(cache) >= _VALUES_MAX:
        cache.clear()
    cache[value] = number


def _anthropic_reset(value: str, now_wall: float) -> float | None:
    """`values.parse_absolute_reset`, with the RFC 3339 instant remembered."""
    moment = _MOMENTS.get(value)
    if moment is None:
        text = value.strip(" \t")
        moment = hv.parse_rfc3339(text)
        if moment is None:
            return hv.parse_absolute_reset(text, now_wall)
        _remember(_MOMENTS, value, moment)
    return max(0.0, moment - now_wall)


def _interval(value: str, now_wall: float) -> float | None:
    """Crossref's `x-rate-limit-interval`: a duration; a window of 0 s is malformed."""
    seconds = hv.parse_duration(value.strip(" \t"))
    return seconds if seconds is not None and seconds > 0 else None


def _getter(keys: list[Any]) -> Getter:
    """`container` -> its items at `keys`, a tuple however many keys there are."""
    if len(keys) >= 2:
        return itemgetter(*keys)
    if keys:
        key = keys[0]
        return lambda container: (container[key],)
    return lambda container: ()


class _Layout:
    """The value vector laid out while compiling (see `_Plan`)."""

    def __init__(self) -> None:
        self.counts: list[str] = []
        self.durations: list[str] = []
        self.timed: list[tuple[str, Reader]] = []
        self.constants: list[object] = []

    def count(self, raw: str) -> tuple[int, int]:
        self.counts.append(raw)
        return 0, len(self.counts) - 1

    def duration(self, raw: str) -> tuple[int, int]:
        self.durations.append(raw)
        return 1, len(self.durations) - 1

    def time(self, raw: str, reader: Reader) -> tuple[int, int]:
        self.timed.append((raw, reader))
        return 2, len(self.timed) - 1

    # The indexes below are final once every header has been laid out.

    def index(self, slot: tuple[int, int] | None) -> int:
        """Where a parsed value ends up; a None constant for a key not sent."""
        if slot is None:
            return self.constant(None)
        group, position = slot
        return (0, len(self.counts), len(self.counts) + len(self.durations))[group] + position

    def runtime(self, name: str) -> int:
        return len(self.counts) + len(self.durations) + len(self.timed) + _RUNTIME.index(name)

    def constant(self, value: object) -> int:
        self.constants.append(value)
        return self.runtime(_RUNTIME[-1]) + len(self.constants)


def _compile(
    names: tuple[str, ...], trust: frozenset[str] | None, conventions: HeaderConventions
) -> _Plan | None:
    """The plan for this shape, or None when its result needs the general path."""
    folded = [name.strip().lower() for name in names]
    if len(set(folded)) != len(folded):
        return None  # same name twice after folding: combined or conflicting there
    trusted = FAMILIES if trust is None else trust
    layout = _Layout()
    observed: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
    seen: set[str] = set()
    retry: dict[str, tuple[int, int]] = {}
    resource: str | None = None
    delays: list[tuple[int, int]] = []  # GitHub and Crossref resets: delays or unix times
    for raw, name in zip(names, folded, strict=True):
        if name in IETF_NAMES:
            return None
        if name in RETRY_NAMES:
            seen.add(FAMILY_RETRY_AFTER)
            # Delta-seconds, a count (an HTTP-date is not: the general path reads it).
            retry[name] = layout.count(raw)
        elif (llm := llm_name(name)) is not None:
            family, key, unit = llm
            keys = observed.setdefault(family, {}).setdefault(unit, {})
            if key in keys:
                return None  # two names for one value (`input-tokens`, `input_tokens`)
            if key != "reset":
                keys[key] = layout.count(raw)
            elif family == FAMILY_OPENAI:
                keys[key] = layout.duration(raw)
            else:
                keys[key] = layout.time(raw, _anthropic_reset)
        elif name in GITHUB_NAMES:
            key = name.removeprefix("x-ratelimit-")
            keys = observed.setdefault(FAMILY_GITHUB, {}).setdefault("requests", {})
            keys[key] = layout.count(raw)  # a reset too: a number (an HTTP-date goes general)
            if key == "reset":
                delays.append(keys[key])
        elif name == GITHUB_RESOURCE:
            resource = raw
            seen.add(FAMILY_GITHUB)
        elif name in CROSSREF_NAMES:
            key = name.removeprefix("x-rate-limit-")
            keys = observed.setdefault(FAMILY_CROSSREF, {}).setdefault("requests", {})
            if key == "interval":
                keys["window"] = layout.time(raw, _interval)
            else:
                keys[key] = layout.count(raw)
                if key == "reset":
                    delays.append(keys[key])
    seen.update(observed)
    # Units in the general path's order: by family priority, then as first sent.
    chosen: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {}
    for family in PRIORITY:
        for unit, keys in observed.get(family, {}).items() if family in trusted else ():
            chosen.setdefault(unit, (family, keys))
    fields: dict[str, tuple[int, ...]] = {}
    waits: list[int] = []
    for unit, (family, keys) in chosen.items():
        if "window" in keys:  # Crossref's interval
            window, assumed = layout.index(keys["window"]), layout.constant(False)
        elif family == FAMILY_GITHUB and resource is not None:
            window = layout.runtime("github_window")
            assumed = layout.runtime("github_window_assumed")
        else:
            documented = documented_window(family, unit, conventions) if "limit" in keys else None
            window, assumed = layout.constant(documented), layout.constant(documented is not None)
        limit, remaining, reset_at, used = (layout.index(keys.get(key)) for key in _KEYS)
        fields[unit] = (limit, remaining, reset_at, window, assumed, used, layout.constant(family))
        if "reset" in keys and "remaining" in keys:  # only a unit at 0 waits
            waits.append(reset_at)
    github_keys = observed.get(FAMILY_GITHUB, {}).get("requests", {})
    github_window = (
        documented_window(FAMILY_GITHUB, "requests", conventions) if "limit" in github_keys else None
    )
    # The most precise Retry-After sent wins (`retry-after-ms` first).
    winner = next((name for name in RETRY_NAMES if name in retry), None)
    retry_trusted = winner is not None and FAMILY_RETRY_AFTER in trusted
    if retry_trusted:
        waits.append(layout.runtime("retry_after"))
    waits.append(layout.constant(0.0))  # never empty: `max` without its slower `default`
    families = {family for family in observed if family in trusted}
    if retry_trusted:
        families.add(FAMILY_RETRY_AFTER)
    ignored = frozenset(seen - trusted)
    hint = None
    if "requests" in chosen or not chosen:  # else the primary unit depends on the values
        none = layout.constant(None)
        main = fields.get("requests", (none,) * 4)
        hint = _getter(
            [
                layout.runtime("retry_after"),
                *main[:4],
                layout.constant("requests"),
                layout.constant(0),
                layout.runtime("units"),
                layout.constant(frozenset(families)),
                layout.constant(ignored),
                layout.constant(()),
                layout.runtime("status"),
                layout.runtime("resource") if FAMILY_GITHUB in trusted else none,
                layout.constant(()),
            ]
        )
    return _Plan(
        conventions=conventions,
        counts=_getter(layout.counts),
        durations=_getter(layout.durations),
        timed=_getter([raw for raw, _ in layout.timed]),
        timed_readers=tuple(reader for _, reader in layout.timed),
        delays=tuple(layout.index(slot) for slot in delays),
        delay_unit=conventions.delay_unit,
        resource=resource,
        github_window=github_window,
        retry=layout.index(retry[winner]) if winner is not None and retry_trusted else -1,
        retry_divisor=1.0 if winner == "retry-after" else 1000.0,
        constants=tuple(layout.constants),
        units=tuple((unit, _getter(list(indexes))) for unit, indexes in fields.items()),
        units_at=layout.runtime("units"),
        hint=hint,
        waits=_getter(waits),
        families=frozenset(families),
        ignored_families=ignored,
        resource_trusted=FAMILY_GITHUB in trusted,
    )
