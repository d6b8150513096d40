"""Header-shape plans give exactly the general parser's hints, and are used where they should be.

`parse_headers` reads a response by the plan compiled for its header names when it can
(`ratelimitd.core.headers.plan`); `parse_headers_general` reads every input the general way.
Random mixes of names (every family, junk, case and whitespace variants, duplicates after
folding) and values (valid, malformed, huge, negative) must give equal hints, also when a
plan compiled for the same names is reused with other values.
"""

from __future__ import annotations

from types import MappingProxyType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratelimitd.core.headers import plan
from ratelimitd.core.headers.conventions import DEFAULT_CONVENTIONS, HeaderConventions
from ratelimitd.core.headers.parse import FAMILIES, RateLimitHint, parse_headers, parse_headers_general
from ratelimitd.core.headers.plan import planned

OPENAI = [
    f"x-ratelimit-{key}-{unit}"
    for key in ("limit", "remaining", "reset")
    for unit in ("requests", "tokens", "input-tokens", "input_tokens")
]
ANTHROPIC = [
    f"anthropic-ratelimit-{unit}-{key}"
    for unit in ("requests", "tokens", "input-tokens", "output-tokens")
    for key in ("limit", "remaining", "reset")
]
GITHUB = [f"x-ratelimit-{key}" for key in ("limit", "remaining", "reset", "used", "resource")]
IETF = ["ratelimit", "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]
CROSSREF = ["x-rate-limit-limit", "x-rate-limit-interval", "x-rate-limit-remaining", "x-rate-limit-reset"]
RETRY = ["retry-after", "retry-after-ms", "x-amz-retry-after"]
JUNK = ["content-type", "date", "x-request-id", "x-ratelimit-foo", "anthropic-ratelimit-x", "server"]
NAMES = OPENAI + ANTHROPIC + GITHUB + IETF + CROSSREF + RETRY + JUNK

NOW = 1_750_000_000.0
VALUES = [
    # counts and delays
    "0",
    "1",
    "59",
    "10000",
    "1999000",
    "1.5",
    "9" * 40,
    "9" * 256,
    "9" * 257,
    "1e3",
    "-1",
    "+5",
    "",
    " 7 ",
    "\t12",
    "٣",
    "nan",
    "inf",
    "1_000",
    # durations
    "6ms",
    "30ms",
    "1s",
    "6m0s",
    "2m59.56s",
    "1h",
    "-1s",
    "1d",
    # times: epochs (s, ms), RFC 3339, HTTP-dates (past and future)
    "1750000060",
    "1750000060000",
    "1749999000",
    "2025-06-15T15:07:00Z",
    "2025-06-15T14:07:00+00:00",
    "2099-01-01T00:00:00Z",
    "2025-06-15T15:07:00",
    "Sun, 15 Jun 2025 15:07:00 GMT",
    "Fri, 31 Dec 1999 23:59:59 GMT",
    # GitHub resources
    "core",
    "search",
    " Core ",
    "graphql",
    "unknown",
    # structured fields (IETF, list-valued GitHub limits)
    "100;w=60",
    "100, 100;w=60, 10000;w=86400",
    '"default";r=50;t=30',
    '"burst";q=100;w=60',
    "limit=100, remaining=50, reset=5",
    "garbage;;",
]
CONVENTIONS = [
    DEFAULT_CONVENTIONS,
    HeaderConventions(delay_unit="milliseconds"),
    HeaderConventions(windows=MappingProxyType({"requests": 86400.0, "tokens": 60.0})),
    HeaderConventions(quota_windows=MappingProxyType({"requests": 86400.0})),
]


@st.composite
def header_name(draw: st.DrawFn) -> str:
    """A known or junk name, sometimes in another case or with whitespace around it."""
    name = draw(st.sampled_from(NAMES))
    variant = draw(st.sampled_from(["lower", "title", "upper", "padded"]))
    if variant == "title":
        return "-".join(part.capitalize() for part in name.split("-"))
    if variant == "upper":
        return name.upper()
    return f" {name}\t" if variant == "padded" else name


names_st = st.lists(header_name(), min_size=0, max_size=10, unique=True)
trust_st = st.none() | st.frozensets(st.sampled_from(sorted(FAMILIES)))
options_st = st.fixed_dictionaries(
    {
        "status": st.sampled_from([None, 200, 403, 429]),
        "now_wall": st.sampled_from([0.0, NOW, 2e9]),
        "trust": trust_st,
        "conventions": st.sampled_from(CONVENTIONS),
        "max_pause": st.sampled_from([None, 0.0, 1.0, 300.0]),
        "quota_evidence": st.booleans(),
    }
)


def values_for(names: list[str]) -> st.SearchStrategy[list[str]]:
    value = st.sampled_from(VALUES) | st.text(max_size=12)
    return st.lists(value, min_size=len(names), max_size=len(names))


def assert_same(headers: dict[str, str], options: dict[str, object]) -> None:
    got = parse_headers(headers, **options)  # type: ignore[arg-type]
    want = parse_headers_general(headers, **options)  # type: ignore[arg-type]
    assert got == want
    assert typed(got) == typed(want)  # also 1 vs 1.0


def typed(hint: RateLimitHint) -> str:
    """The hint's repr, with every field's type; sets sorted (their order varies by hash)."""
    fields = hint._asdict()
    fields["families"], fields["ignored_families"] = sorted(hint.families), sorted(hint.ignored_families)
    return repr(fields)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=names_st, data=st.data(), options=options_st)
def test_plans_give_the_general_hint_also_when_reused(
    names: list[str], data: st.DataObject, options: dict[str, object]
) -> None:
    for _ in range(3):  # the same names with new values: the plan compiled first is reused
        values = data.draw(values_for(names))
        assert_same(dict(zip(names, values, strict=True)), options)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), options=options_st)
def test_plans_of_provider_shapes_with_valid_values(data: st.DataObject, options: dict[str, object]) -> None:
    """Mostly valid values, so the plans themselves (not the general fallback) answer."""
    family = data.draw(st.sampled_from([OPENAI, ANTHROPIC, GITHUB, CROSSREF, RETRY]))
    pool = st.sampled_from(family + RETRY + JUNK[:3])
    names = data.draw(st.lists(pool, min_size=1, max_size=8, unique=True))
    for _ in range(3):
        values = []
        for name in names:
            if name.endswith("reset") and name.startswith("anthropic"):
                choices = ["2025-06-15T15:07:00Z", "2099-01-01T00:00:00Z", "1750000060", "0"]
            elif name.endswith("resource"):
                choices = ["core", "search", "other"]
            elif "reset" in name and name.startswith("x-ratelimit-reset-"):
                choices = ["6ms", "30ms", "1s", "6m0s", "0", "7.66s"]
            elif name.endswith("interval"):
                choices = ["1s", "60", "1h", "0s"]
            elif name == "retry-after":
                choices = ["0", "20", "3600", "Sun, 15 Jun 2025 15:07:00 GMT"]
            else:
                choices = ["0", "1", "9999", "10000", "1750000060", "1750000060000", "9" * 30]
            values.append(data.draw(st.sampled_from(choices)))
        assert_same(dict(zip(names, values, strict=True)), options)


OPENAI_SIX = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-tokens": "1999000",
    "x-ratelimit-reset-tokens": "30ms",
}
ANTHROPIC_SIX = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-requests-reset": "2025-06-15T15:07:00Z",
    "anthropic-ratelimit-tokens-limit": "400000",
    "anthropic-ratelimit-tokens-remaining": "399000",
    "anthropic-ratelimit-tokens-reset": "2025-06-15T15:07:00Z",
}
GITHUB_FIVE = {
    "X-RateLimit-Limit": "5000",
    "X-RateLimit-Remaining": "4999",
    "X-RateLimit-Used": "1",
    "X-RateLimit-Reset": "1750000060",
    "X-RateLimit-Resource": "core",
}

CROSSREF_TWO = {"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "1s"}


def test_provider_shapes_are_read_by_their_plans() -> None:
    """The shapes providers send take the plan from their second response on, so the tests
    above compare two paths."""
    for headers in (
        OPENAI_SIX,
        ANTHROPIC_SIX,
        GITHUB_FIVE,
        {"retry-after": "20", **OPENAI_SIX},
        CROSSREF_TWO,
    ):
        for trust in (None, FAMILIES):
            planned(headers, 200, NOW, trust, DEFAULT_CONVENTIONS)
            assert planned(headers, 200, NOW, trust, DEFAULT_CONVENTIONS) is not None


def test_a_shape_seen_once_is_not_compiled() -> None:
    """A client that sends new names every time pays the general path, not a compilation."""
    headers = {**OPENAI_SIX, "x-seen-once": "1"}
    assert planned(headers, 200, NOW, None, DEFAULT_CONVENTIONS) is None
    assert (tuple(headers), None, id(DEFAULT_CONVENTIONS)) not in plan._PLANS
    assert planned(headers, 200, NOW, None, DEFAULT_CONVENTIONS) is not None


def test_shapes_the_general_path_keeps() -> None:
    """Structured fields, Crossref, names equal after folding and malformed values."""
    for headers in (
        {"RateLimit-Policy": '"burst";q=100;w=60'},
        {"x-rate-limit-limit": "100", "x-rate-limit-interval": "0s"},
        {"retry-after": "5", "Retry-After": "5"},
        {"x-ratelimit-limit": "100, 100;w=60"},
        {**OPENAI_SIX, "x-ratelimit-remaining-tokens": "-1"},
    ):
        for _ in range(2):  # once seen, once compiled
            assert planned(headers, 200, NOW, None, DEFAULT_CONVENTIONS) is None
        assert_same(headers, {"status": 200, "now_wall": NOW})


@settings(max_examples=400, deadline=None)
@given(
    raw=st.lists(
        st.one_of(
            st.text(alphabet="0123456789", max_size=30),
            st.text(alphabet="0123456789 .+-e٣²xX", max_size=12),
            st.sampled_from(["", "0", "007", "9" * 200, "1" * 257]),
        ),
        max_size=6,
    ).map(tuple)
)
def test_counts_read_digit_by_digit_equal_the_one_pass_reading(raw: tuple[str, ...]) -> None:
    # The compiled daemon reads counts one way, the interpreted one the other.
    assert plan._digit_counts(raw) == plan._plain_counts(raw)
