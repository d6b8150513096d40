"""parse_headers against real provider responses, malformed input, trust and classification.

Every sample below is copied from a public source named in the comment above it; the
expected numbers are what that provider's documentation says the values mean.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import pytest

from ratelimitd.core.headers.parse import (
    FAMILIES,
    HeaderConventions,
    RateLimitHint,
    UnitHint,
    parse_headers,
)


def http_date(text: str) -> float:
    """Unix seconds of an HTTP-date, by the standard library (an oracle independent of ours)."""
    return parsedate_to_datetime(text).timestamp()


@dataclass(frozen=True)
class Sample:
    headers: dict[str, str]
    status: int | None
    now_wall: float
    # unit -> (limit, remaining, reset_after, window); None means "not given"
    units: dict[str, tuple[float | None, float | None, float | None, float | None]]
    retry_after: float | None = None
    families: frozenset[str] = frozenset()
    malformed: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)


SAMPLES = {
    # OpenAI "Rate limits in headers" sample table (platform.openai.com/docs/guides/
    # rate-limits#rate-limits-in-headers, as archived at spybara.com/openai/api/history/
    # docs/en/2026-06-24-2202..2026-06-26-1757/). Limits are per minute (assumed window).
    "openai-docs": Sample(
        headers={
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (60, 59, 1.0, 60), "tokens": (150000, 149984, 360.0, 60)},
        families=frozenset({"openai"}),
    ),
    # A real chat-completions response quoted in community.openai.com/t/
    # how-to-get-rate-limit-reset-time-for-response-api/1268905 (incl. `tokens_usage_based`).
    "openai-community": Sample(
        headers={
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-limit-tokens": "160000",
            "x-ratelimit-limit-tokens_usage_based": "160000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-remaining-tokens": "159976",
            "x-ratelimit-remaining-tokens_usage_based": "159976",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-reset-tokens": "9ms",
            "x-ratelimit-reset-tokens_usage_based": "9ms",
        },
        status=200,
        now_wall=http_date("Mon, 26 May 2025 05:00:04 GMT"),
        units={
            "requests": (5000, 4999, 0.012, 60),
            "tokens": (160000, 159976, 0.009, 60),
            "tokens_usage_based": (160000, 159976, 0.009, 60),
        },
        families=frozenset({"openai"}),
    ),
    # Groq's OpenAI-compatible headers (console.groq.com/docs/rate-limits), with retry-after.
    "groq-docs-429": Sample(
        headers={
            "retry-after": "2",
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-limit-tokens": "18000",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-remaining-tokens": "17997",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-reset-tokens": "7.66s",
        },
        status=429,
        now_wall=1_750_000_000.0,
        units={"requests": (14400, 14370, 179.56, 60), "tokens": (18000, 17997, 7.66, 60)},
        retry_after=2.0,
        families=frozenset({"openai", "retry_after"}),
    ),
    # Azure OpenAI answering -1 (github.com/openai/openai-dotnet/issues/838): negative
    # counts are malformed and dropped; the valid reset survives.
    "azure-openai-minus-one": Sample(
        headers={
            "x-ratelimit-limit-tokens": "-1",
            "x-ratelimit-remaining-tokens": "-1",
            "x-ratelimit-reset-tokens": "0",
        },
        status=200,
        now_wall=1_750_000_000.0,
        units={"tokens": (None, None, 0.0, None)},
        families=frozenset({"openai"}),
        malformed=("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"),
    ),
    # A recorded Anthropic Messages response (tidyllm test fixture, rdrr.io/cran/tidyllm/
    # src/tests/testthat/claude/api.anthropic.com/v1/messages-e050b5-POST.R). The resets
    # are one second before the response's Date, so they clamp to 0.
    "anthropic-recorded": Sample(
        headers={
            "date": "Thu, 21 Aug 2025 12:41:00 GMT",
            "anthropic-ratelimit-input-tokens-limit": "80000",
            "anthropic-ratelimit-input-tokens-remaining": "80000",
            "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
            "anthropic-ratelimit-output-tokens-limit": "16000",
            "anthropic-ratelimit-output-tokens-remaining": "16000",
            "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
            "anthropic-ratelimit-requests-limit": "1000",
            "anthropic-ratelimit-requests-remaining": "999",
            "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
            "anthropic-ratelimit-tokens-limit": "96000",
            "anthropic-ratelimit-tokens-remaining": "96000",
            "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:59Z",
        },
        status=200,
        now_wall=http_date("Thu, 21 Aug 2025 12:41:00 GMT"),
        units={
            "requests": (1000, 999, 0.0, 60),
            "tokens": (96000, 96000, 0.0, 60),
            "input_tokens": (80000, 80000, 0.0, 60),
            "output_tokens": (16000, 16000, 0.0, 60),
        },
        families=frozenset({"anthropic"}),
    ),
    # An Anthropic 429 quoted in github.com/anthropics/anthropic-sdk-typescript/issues/357:
    # requests exhausted until 20:00:00Z, one second after the response's Date.
    "anthropic-429": Sample(
        headers={
            "anthropic-ratelimit-requests-limit": "5",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2024-03-26T20:00:00Z",
            "anthropic-ratelimit-tokens-limit": "25000",
            "anthropic-ratelimit-tokens-remaining": "16000",
            "anthropic-ratelimit-tokens-reset": "2024-03-26T20:00:00Z",
            "date": "Tue, 26 Mar 2024 19:59:59 GMT",
            "x-should-retry": "true",
        },
        status=429,
        now_wall=http_date("Tue, 26 Mar 2024 19:59:59 GMT"),
        units={"requests": (5, 0, 1.0, 60), "tokens": (25000, 16000, 1.0, 60)},
        families=frozenset({"anthropic"}),
    ),
    # GitHub's documented primary-limit error (docs.github.com, "Rate limits for the REST
    # API"; x-ratelimit-used added by github/docs#29242): 403, remaining 0, epoch reset.
    "github-403-exhausted": Sample(
        headers={
            "Date": "Tue, 20 Aug 2013 14:50:41 GMT",
            "x-ratelimit-limit": "60",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-used": "60",
            "x-ratelimit-reset": "1377013266",
        },
        status=403,
        now_wall=http_date("Tue, 20 Aug 2013 14:50:41 GMT"),
        units={"requests": (60, 0, 1377013266 - http_date("Tue, 20 Aug 2013 14:50:41 GMT"), None)},
        families=frozenset({"github"}),
        extra={"used": 60.0},
    ),
    # The authenticated example from the same page, plus `x-ratelimit-resource: core`
    # (documented there), whose window is one hour.
    "github-authenticated": Sample(
        headers={
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4966",
            "X-RateLimit-Used": "34",
            "X-RateLimit-Reset": "1372700873",
            "X-RateLimit-Resource": "core",
        },
        status=200,
        now_wall=http_date("Mon, 01 Jul 2013 17:27:06 GMT"),
        units={"requests": (5000, 4966, 1372700873 - http_date("Mon, 01 Jul 2013 17:27:06 GMT"), 3600)},
        families=frozenset({"github"}),
        extra={"resource": "core", "used": 34.0},
    ),
    # draft-ietf-httpapi-ratelimit-headers-10 §3.2 and §4.2 examples, same policy name.
    "ietf-draft10": Sample(
        headers={
            "RateLimit-Policy": '"default";q=100;w=10',
            "RateLimit": '"default";r=50;t=30',
        },
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (100, 50, 30.0, 10)},
        families=frozenset({"ietf"}),
    ),
    # draft 10 §3 two policies: no service limit, so the lowest sustained rate
    # (daily: 1000/86400 < burst: 100/60) describes the unit.
    "ietf-draft10-two-policies": Sample(
        headers={"RateLimit-Policy": '"burst";q=100;w=60,"daily";q=1000;w=86400'},
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (1000, None, None, 86400)},
        families=frozenset({"ietf"}),
    ),
    # draft 10 §3.2: a quota in content-bytes with a partition key; §4.2: 300 MB left.
    "ietf-draft10-content-bytes": Sample(
        headers={
            "RateLimit-Policy": '"peruser";q=65535;qu="content-bytes";w=10;pk=:sdfjLJUOUH==:',
            "RateLimit": '"peruser";r=300000000;t=60;pk=:QXBwLTk5OQ==:',
        },
        status=200,
        now_wall=1_750_000_000.0,
        units={"content_bytes": (65535, 300000000, 60.0, 10)},
        families=frozenset({"ietf"}),
    ),
    # draft-ietf-httpapi-ratelimit-headers-07 §3.5: the older Dictionary form.
    "ietf-draft07": Sample(
        headers={"RateLimit-Policy": "100;w=10", "RateLimit": "limit=100, remaining=50, reset=5"},
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (100, 50, 5.0, 10)},
        families=frozenset({"ietf"}),
    ),
    # The separate fields of the early drafts, with the policy list in RateLimit-Limit
    # (IETF 106 slides, datatracker.ietf.org/meeting/106/materials/
    # slides-106-httpbis-sessa-rate-limiting-00.pdf).
    "ietf-separate": Sample(
        headers={
            "RateLimit-Limit": '10, 10;w=5, 80;w=60;comment="bar"',
            "RateLimit-Remaining": "6",
            "RateLimit-Reset": "3",
        },
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (10, 6, 3.0, 5)},
        families=frozenset({"ietf"}),
    ),
    # GitLab's documented 429 (gitlab.com/gitlab-org/gitlab commit f5968db5,
    # user_and_ip_rate_limits.md): RateLimit-Reset is a unix time there.
    "gitlab-429": Sample(
        headers={
            "RateLimit-Limit": "60",
            "RateLimit-Observed": "67",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": "1609844400",
            "RateLimit-ResetTime": "Tue, 05 Jan 2021 11:00:00 GMT",
            "Retry-After": "30",
        },
        status=429,
        now_wall=1609844400 - 30.0,
        units={"requests": (60, 0, 30.0, None)},
        retry_after=30.0,
        families=frozenset({"ietf", "retry_after"}),
    ),
    # Crossref's documented example (github.com/CrossRef/rest-api-doc commit af2b282).
    "crossref-50-per-second": Sample(
        headers={"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "1s"},
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (50, None, None, 1)},
        families=frozenset({"crossref"}),
    ),
    "crossref-3000-per-minute": Sample(
        headers={"X-Rate-Limit-Limit": "3000", "X-Rate-Limit-Interval": "60s"},
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (3000, None, None, 60)},
        families=frozenset({"crossref"}),
    ),
    # Okta's x-rate-limit-* with an epoch reset (github.com/oktadeveloper/
    # okta-blog-archive/pull/170) shares the Crossref family's names.
    "okta-x-rate-limit": Sample(
        headers={
            "X-Rate-Limit-Limit": "1",
            "X-Rate-Limit-Remaining": "0",
            "X-Rate-Limit-Reset": "1447534590",
        },
        status=429,
        now_wall=1447534590 - 12.0,
        units={"requests": (1, 0, 12.0, None)},
        families=frozenset({"crossref"}),
    ),
    # RFC 9110 §10.2.3's two Retry-After examples.
    "rfc9110-retry-after-date": Sample(
        headers={"Retry-After": "Fri, 31 Dec 1999 23:59:59 GMT"},
        status=503,
        now_wall=http_date("Fri, 31 Dec 1999 23:57:59 GMT"),
        units={},
        retry_after=120.0,
        families=frozenset({"retry_after"}),
    ),
    "rfc9110-retry-after-seconds": Sample(
        headers={"Retry-After": "120"},
        status=503,
        now_wall=1_750_000_000.0,
        units={},
        retry_after=120.0,
        families=frozenset({"retry_after"}),
    ),
    # botocore.retries.standard reads `x-amz-retry-after` as integer milliseconds.
    "aws-x-amz-retry-after": Sample(
        headers={"x-amz-retry-after": "1500"},
        status=429,
        now_wall=1_750_000_000.0,
        units={},
        retry_after=1.5,
        families=frozenset({"retry_after"}),
    ),
    # The Anthropic and OpenAI SDKs prefer `retry-after-ms` over the rounded `retry-after`
    # (anthropic-sdk-typescript#357): the precise value wins here too.
    "retry-after-ms-preferred": Sample(
        headers={"retry-after": "1", "retry-after-ms": "350"},
        status=429,
        now_wall=1_750_000_000.0,
        units={},
        retry_after=0.35,
        families=frozenset({"retry_after"}),
    ),
    # A list-valued X-RateLimit-Limit, from developer.whoop.com/docs/developing/rate-limiting:
    # the first member (100) is the limit -Remaining and -Reset describe; its window is that
    # of the member with the same count (60 s), not the daily one.
    "whoop-list-limit": Sample(
        headers={
            "X-RateLimit-Limit": "100, 100;window=60, 10000;window=86400",
            "X-RateLimit-Remaining": "98",
            "X-RateLimit-Reset": "3",
        },
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (100, 98, 3.0, 60)},
        families=frozenset({"github"}),
    ),
    # draft-ietf-httpapi-ratelimit-headers, "Missing Remaining information" (editor's copy,
    # github.com/ietf-wg-httpapi/ratelimit-headers at 0669b82): no `r`, the reset still counts.
    "ietf-missing-remaining": Sample(
        headers={"RateLimit-Policy": "quota;q=100;w=1", "RateLimit": "quota;t=1"},
        status=200,
        now_wall=1_750_000_000.0,
        units={"requests": (100, None, 1.0, 1.0)},
        families=frozenset({"ietf"}),
    ),
}


@pytest.mark.parametrize("sample", SAMPLES.values(), ids=SAMPLES.keys())
def test_real_samples(sample: Sample) -> None:
    hint = parse_headers(sample.headers, status=sample.status, now_wall=sample.now_wall)

    got = {name: (u.limit, u.remaining, u.reset_after, u.window) for name, u in hint.units.items()}
    assert got.keys() == sample.units.keys()
    for unit, expected in sample.units.items():
        for got_value, want in zip(got[unit], expected, strict=True):
            assert (got_value is None) == (want is None), (unit, got[unit], expected)
            if want is not None:
                assert got_value == pytest.approx(want, abs=1e-6), (unit, got[unit], expected)
    if sample.retry_after is None:
        assert hint.retry_after is None
    else:
        assert hint.retry_after == pytest.approx(sample.retry_after)
    assert hint.families == sample.families
    assert hint.malformed_names == sample.malformed
    assert hint.malformed == len(sample.malformed)
    assert hint.status == sample.status
    if "resource" in sample.extra:
        assert hint.resource == sample.extra["resource"]
    if "used" in sample.extra:
        assert hint.requests is not None
        assert hint.requests.used == sample.extra["used"]


def test_flat_fields_mirror_requests_unit() -> None:
    hint = parse_headers(SAMPLES["openai-docs"].headers, status=200, now_wall=SAMPLES["openai-docs"].now_wall)
    assert hint.unit == "requests"
    assert hint.requests is not None
    assert (hint.limit, hint.remaining, hint.reset_after, hint.window) == (
        hint.requests.limit,
        hint.requests.remaining,
        hint.requests.reset_after,
        hint.requests.window,
    )
    assert hint.tokens is not None
    assert hint.tokens.reset_after == 360.0


def test_flat_fields_follow_exhausted_unit_without_requests() -> None:
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": "2025-01-01T00:00:40Z",
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "anthropic-ratelimit-output-tokens-remaining": "10",
    }
    hint = parse_headers(headers, status=429, now_wall=http_date("Wed, 01 Jan 2025 00:00:00 GMT"))
    assert hint.unit == "input_tokens"
    assert (hint.remaining, hint.reset_after) == (0.0, 40.0)


def test_window_assumed_only_for_documented_per_minute_families() -> None:
    openai = parse_headers({"x-ratelimit-limit-requests": "60"}, status=200, now_wall=0.0)
    crossref = parse_headers(
        {"x-rate-limit-limit": "50", "x-rate-limit-interval": "1s"}, status=200, now_wall=0.0
    )
    assert openai.requests is not None
    assert openai.requests.window_assumed
    assert crossref.requests is not None
    assert not crossref.requests.window_assumed


@pytest.mark.parametrize(
    ("headers", "unit", "rate"),
    [
        (SAMPLES["crossref-50-per-second"].headers, "requests", 50.0),
        (SAMPLES["crossref-3000-per-minute"].headers, "requests", 50.0),
        (SAMPLES["openai-docs"].headers, "tokens", 150000 / 60),
        (SAMPLES["github-authenticated"].headers, "requests", 5000 / 3600),
        (SAMPLES["ietf-draft10"].headers, "requests", 100 / 10),
        (SAMPLES["anthropic-recorded"].headers, "output_tokens", 16000 / 60),
    ],
)
def test_announced_rate_per_second(headers: dict[str, str], unit: str, rate: float) -> None:
    hint = parse_headers(headers, status=200, now_wall=1_372_700_000.0)
    assert hint.announced_rate_per_second(unit) == pytest.approx(rate)


def test_announced_rate_unknown_without_window_or_unit() -> None:
    github_no_resource = parse_headers(
        {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "10"}, status=200, now_wall=0.0
    )
    assert github_no_resource.announced_rate_per_second("requests") is None
    assert github_no_resource.announced_rate_per_second("tokens") is None


# --- malformed input --------------------------------------------------------------------

MALFORMED = {
    "garbage-date": ({"Retry-After": "Fri, 32 Dec 1999 23:59:59 GMT"}, ("retry-after",)),
    "bad-hour": ({"Retry-After": "Fri, 31 Dec 1999 25:00:00 GMT"}, ("retry-after",)),
    "js-date-string": (
        {"Retry-After": "Tue Feb 16 2021 09:02:42 GMT+0100 (Central European Standard Time)"},
        ("retry-after",),
    ),
    "negative-seconds": ({"Retry-After": "-5"}, ("retry-after",)),
    "nan": ({"Retry-After": "NaN", "retry-after-ms": "nan"}, ("retry-after-ms", "retry-after")),
    "infinity": ({"Retry-After": "inf"}, ("retry-after",)),
    "exponent": ({"Retry-After": "1e3"}, ("retry-after",)),
    "empty": ({"Retry-After": "", "x-ratelimit-limit": " "}, ("retry-after", "x-ratelimit-limit")),
    "words": ({"x-ratelimit-reset-requests": "soon"}, ("x-ratelimit-reset-requests",)),
    "bad-duration-unit": ({"x-ratelimit-reset-tokens": "6d"}, ("x-ratelimit-reset-tokens",)),
    "duration-negative": ({"x-ratelimit-reset-tokens": "-1s"}, ("x-ratelimit-reset-tokens",)),
    "naive-rfc3339": (
        {"anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59"},
        ("anthropic-ratelimit-requests-reset",),
    ),
    "huge-digits": ({"x-ratelimit-remaining": "9" * 5000}, ("x-ratelimit-remaining",)),
    "huge-date": ({"Retry-After": "Fri, 31 Dec 99999 23:59:59 GMT"}, ("retry-after",)),
    "ietf-uppercase-key": ({"RateLimit": "Limit=100, remaining=50"}, ("ratelimit",)),
    "ietf-trailing-comma": ({"RateLimit-Policy": '"a";q=1;w=1,'}, ("ratelimit-policy",)),
    "ietf-negative-r": ({"RateLimit": '"a";r=-1;t=3'}, ("ratelimit",)),
    "ietf-zero-window": ({"RateLimit-Policy": '"a";q=10;w=0'}, ("ratelimit-policy",)),
    "ietf-missing-q": ({"RateLimit-Policy": '"a";w=60'}, ("ratelimit-policy",)),
    "ietf-decimal-r": ({"RateLimit": '"a";r=1.5'}, ("ratelimit",)),
    "ietf-separate-junk": (
        {"RateLimit-Limit": "lots", "RateLimit-Reset": "later"},
        ("ratelimit-limit", "ratelimit-reset"),
    ),
    "ietf-neither-r-nor-t": ({"RateLimit": '"a";q=1'}, ("ratelimit",)),
    "list-limit-junk": ({"X-RateLimit-Limit": "lots, 100;window=60"}, ("x-ratelimit-limit",)),
    "crossref-zero-interval": ({"x-rate-limit-interval": "0s"}, ("x-rate-limit-interval",)),
    "conflicting-duplicates": ({"Retry-After": "5", "retry-after": "7"}, ("retry-after",)),
}


@pytest.mark.parametrize(("headers", "bad"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_values_are_ignored_and_counted(headers: dict[str, str], bad: tuple[str, ...]) -> None:
    hint = parse_headers(headers, status=429, now_wall=1_750_000_000.0)
    assert hint.malformed_names == bad
    assert hint.malformed == len(bad)
    assert hint.retry_after is None
    assert all(u.limit is None and u.remaining is None for u in hint.units.values())


def test_malformed_header_does_not_spoil_its_neighbours() -> None:
    headers = {
        "Retry-After": "whenever",
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "NaN",
        "x-ratelimit-reset-requests": "120ms",
    }
    hint = parse_headers(headers, status=429, now_wall=0.0)
    assert hint.malformed_names == ("retry-after", "x-ratelimit-remaining-requests")
    assert hint.requests == UnitHint(
        limit=500.0, reset_after=0.12, window=60.0, window_assumed=True, family="openai"
    )


def test_retry_after_in_the_past_clamps_to_zero_and_huge_is_kept() -> None:
    past = parse_headers({"Retry-After": "Fri, 31 Dec 1999 23:59:59 GMT"}, status=429, now_wall=2e9)
    huge = parse_headers({"Retry-After": "99999999999"}, status=429, now_wall=0.0)
    assert past.retry_after == 0.0
    assert huge.retry_after == 99999999999.0


def test_equal_duplicates_are_fine_and_list_fields_combine() -> None:
    same = parse_headers({"Retry-After": "5", "retry-after": " 5"}, status=429, now_wall=0.0)
    combined = parse_headers(
        {"RateLimit": '"a";r=7;t=1', "ratelimit": '"b";r=0;t=9'}, status=200, now_wall=0.0
    )
    assert (same.retry_after, same.malformed) == (5.0, 0)
    assert combined.requests is not None
    assert (combined.requests.remaining, combined.requests.reset_after) == (0.0, 9.0)


def test_random_garbage_never_raises() -> None:
    names = [
        "retry-after",
        "retry-after-ms",
        "x-amz-retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-tokens-reset",
        "x-ratelimit-reset",
        "x-ratelimit-remaining",
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "ratelimit-reset",
        "x-rate-limit-interval",
    ]
    alphabet = '0123456789.-;=,"():?*abcdefghmnqrstuwxyzGMT ZT\t\\µ'
    rng = random.Random(20240611)
    for _ in range(3000):
        headers = {
            rng.choice(names): "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            for _ in range(rng.randint(1, 4))
        }
        hint = parse_headers(headers, status=rng.choice([200, 403, 429, None]), now_wall=1e9)
        assert hint.malformed == len(hint.malformed_names)
        numbers = [hint.retry_after] + [
            v for u in hint.units.values() for v in (u.limit, u.remaining, u.reset_after, u.window)
        ]
        assert all(v is None or (math.isfinite(v) and v >= 0) for v in numbers), headers


# --- trust and priority -----------------------------------------------------------------


def test_untrusted_families_are_ignored_but_reported() -> None:
    headers = {**SAMPLES["groq-docs-429"].headers, "x-rate-limit-limit": "50"}
    hint = parse_headers(headers, status=429, now_wall=0.0, trust=frozenset({"retry_after"}))
    assert hint.units == {}
    assert hint.retry_after == 2.0
    assert hint.families == frozenset({"retry_after"})
    assert hint.ignored_families == frozenset({"openai", "crossref"})


def test_untrusted_retry_after_is_dropped() -> None:
    hint = parse_headers(
        {"Retry-After": "30", "x-ratelimit-limit": "60", "x-ratelimit-remaining": "1"},
        status=429,
        now_wall=0.0,
        trust=frozenset({"github"}),
    )
    assert hint.retry_after is None
    assert hint.ignored_families == frozenset({"retry_after"})
    assert hint.requests is not None
    assert hint.requests.remaining == 1.0


def test_provider_family_wins_over_ietf_for_the_same_unit() -> None:
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4000",
        "x-ratelimit-reset": "1372700873",
        "RateLimit": '"default";r=3;t=5',
    }
    trusted_all = parse_headers(headers, status=200, now_wall=1372700000.0)
    ietf_only = parse_headers(headers, status=200, now_wall=1372700000.0, trust=frozenset({"ietf"}))
    assert trusted_all.requests is not None
    assert trusted_all.requests.family == "github"
    assert trusted_all.families == frozenset({"github", "ietf"})
    assert ietf_only.requests is not None
    assert (ietf_only.requests.family, ietf_only.requests.remaining) == ("ietf", 3.0)


def test_families_constant_names_every_family_the_parser_reports() -> None:
    reported: set[str] = set()
    for sample in SAMPLES.values():
        reported |= parse_headers(sample.headers, status=200, now_wall=0.0).families
    assert reported == FAMILIES


# --- classification and pauses ----------------------------------------------------------


def test_classify_github_403_with_remaining_zero_is_rate_limited() -> None:
    sample = SAMPLES["github-403-exhausted"]
    hint = parse_headers(sample.headers, status=403, now_wall=sample.now_wall)
    assert hint.rate_limited
    assert hint.classify() == "rate_limited"
    assert hint.exhausted_units() == ("requests",)


def test_classify_plain_403_is_not_rate_limited() -> None:
    hint = parse_headers({"content-type": "application/json"}, status=403, now_wall=0.0)
    assert not hint.rate_limited
    assert hint.classify() == "ok"
    assert hint.empty


def test_classify_quota_when_reset_is_far_away() -> None:
    now = http_date("Wed, 01 Jan 2025 00:00:00 GMT")
    headers = {
        "anthropic-ratelimit-tokens-limit": "1000000",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2025-01-01T05:00:00Z",
    }
    hint = parse_headers(headers, status=429, now_wall=now)
    assert hint.is_quota_exhausted()
    assert hint.classify() == "quota_exhausted"
    assert hint.classify(long_reset_threshold=6 * 3600) == "rate_limited"
    assert not hint.is_quota_exhausted(long_reset_threshold=5 * 3600)


def test_classify_429_without_headers_and_200_with_room() -> None:
    assert parse_headers({}, status=429, now_wall=0.0).classify() == "rate_limited"
    ok = parse_headers(SAMPLES["openai-docs"].headers, status=200, now_wall=0.0)
    assert ok.classify() == "ok"
    assert ok.exhausted_units() == ()
    assert ok.min_reset_for_exhausted() is None
    assert ok.suggested_pause() is None


def test_resets_and_pause_over_several_exhausted_units() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m30s",
        "retry-after": "10",
    }
    hint = parse_headers(headers, status=429, now_wall=0.0)
    assert hint.exhausted_units() == ("requests", "tokens")
    assert hint.min_reset_for_exhausted() == 2.0
    assert hint.max_reset_for_exhausted() == 90.0
    assert hint.suggested_pause() == 90.0
    only_retry = parse_headers({"retry-after": "10"}, status=429, now_wall=0.0)
    assert only_retry.suggested_pause() == 10.0


def test_hint_built_from_flat_fields_has_its_unit() -> None:
    hint = RateLimitHint(limit=10, remaining=0, reset_after=5.0, window=1.0)
    assert hint.requests == UnitHint(limit=10, remaining=0, reset_after=5.0, window=1.0)
    assert hint.exhausted_units() == ("requests",)
    assert hint.announced_rate_per_second() == 10.0
    tokens = RateLimitHint(remaining=3, unit="tokens")
    assert tokens.tokens is not None
    assert tokens.requests is None
    assert RateLimitHint().units == {}


def test_a_documented_per_day_window_replaces_the_assumed_minute() -> None:
    # Groq sends per-day request limits under OpenAI's names (console.groq.com/docs/rate-limits:
    # x-ratelimit-limit-requests is "Requests Per Day"); per minute they would read 240/s.
    headers = {"x-ratelimit-limit-requests": "14400", "x-ratelimit-limit-tokens": "18000"}
    groq = HeaderConventions(windows={"requests": 86400.0})
    assumed = parse_headers(headers, status=200, now_wall=0.0)
    assert assumed.announced_rate_per_second() == pytest.approx(240.0)
    hint = parse_headers(headers, status=200, now_wall=0.0, conventions=groq)
    assert hint.announced_rate_per_second() == pytest.approx(14400 / 86400)
    assert hint.requests is not None
    assert hint.requests.window_assumed
    assert hint.announced_rate_per_second("tokens") == pytest.approx(300.0)  # still per minute
