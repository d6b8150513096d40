"""Kinds of 429 and friends from real response headers.

Each case is a real provider response's status, headers and body `reason`, parsed by the real
`parse_headers`, then fed to a `BucketLearner` with LEARNING on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ratelimitd.core.headers.parse import parse_headers
from ratelimitd.core.learning.kinds import classify_report, quota_wait
from ratelimitd.core.learning.learner import BucketLearner, LearningSettings, ReportEvent

NOW_WALL = 1_700_000_000.0  # 2023-11-14T22:13:20Z
SETTINGS = LearningSettings(learning=True, recovery=True)


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


def event(sample: Sample) -> ReportEvent:
    hint = parse_headers(sample.headers, status=sample.status, now_wall=NOW_WALL)
    return ReportEvent(status=sample.status, reason=sample.reason, hint=hint)


GITHUB_PRIMARY_403 = Sample(
    "github primary 403, hourly limit spent, reset in 30 min",
    403,
    {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-used": "5000",
        "x-ratelimit-reset": str(int(NOW_WALL) + 1800),
        "x-ratelimit-resource": "core",
    },
)
GITHUB_PRIMARY_403_SOON = Sample(
    "github primary 403, reset in 2 min",
    403,
    {
        "x-ratelimit-limit": "30",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-used": "30",
        "x-ratelimit-reset": str(int(NOW_WALL) + 120),
        "x-ratelimit-resource": "search",
    },
)
GITHUB_SECONDARY_403 = Sample(
    "github secondary 403: only retry-after",
    403,
    {
        "retry-after": "60",
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4987",
        "x-ratelimit-used": "13",
        "x-ratelimit-reset": str(int(NOW_WALL) + 3000),
        "x-ratelimit-resource": "core",
    },
)
OPENAI_INSUFFICIENT_QUOTA = Sample(
    "openai 429 insufficient_quota",
    429,
    {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "2000000",
        "x-ratelimit-remaining-tokens": "1999990",
        "x-ratelimit-reset-tokens": "0s",
    },
    reason="insufficient_quota",
)
OPENAI_TOKENS_429 = Sample(
    "openai 429 tokens per minute spent",
    429,
    {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "12.5s",
    },
)
ANTHROPIC_TOKENS_429 = Sample(
    "anthropic 429, output tokens exhausted, requests left",
    429,
    {
        "retry-after": "20",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:21Z",
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:40Z",
    },
)
ANTHROPIC_TOKENS_403 = Sample(
    "token-only exhaustion on a 403 (no retry-after): a rate limit, not auth",
    403,
    {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:50Z",
    },
)
ANTHROPIC_DAILY_TOKENS = Sample(
    "token quota at 0 until a reset 5 h away: spent quota",
    429,
    {
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-tokens-limit": "1000000",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2023-11-15T03:13:20Z",
    },
)
ANTHROPIC_529 = Sample("anthropic 529 overloaded_error", 529, {"content-type": "application/json"})
AUTH_401 = Sample("401 bad key", 401, {"www-authenticate": 'Bearer realm="api"'})
AUTH_403 = Sample("github 403 without rate-limit evidence", 403, {"x-ratelimit-remaining": "4999"})


@pytest.mark.parametrize(
    ("sample", "kind"),
    [
        (GITHUB_PRIMARY_403, "quota"),
        (GITHUB_PRIMARY_403_SOON, "rate_limit"),
        (GITHUB_SECONDARY_403, "rate_limit"),
        (OPENAI_INSUFFICIENT_QUOTA, "quota"),
        (OPENAI_TOKENS_429, "rate_limit"),
        (ANTHROPIC_TOKENS_429, "rate_limit"),
        (ANTHROPIC_TOKENS_403, "rate_limit"),
        (ANTHROPIC_DAILY_TOKENS, "quota"),
        (ANTHROPIC_529, "overload"),
        (AUTH_401, "auth"),
        (AUTH_403, "auth"),
    ],
    ids=lambda value: value.name if isinstance(value, Sample) else value,
)
def test_classify_real_samples(sample: Sample, kind: str) -> None:
    assert classify_report(event(sample), SETTINGS) == kind


@pytest.mark.parametrize(
    ("sample", "until"),
    [(GITHUB_PRIMARY_403, 1800.0), (ANTHROPIC_DAILY_TOKENS, 5 * 3600.0)],
    ids=lambda value: value.name if isinstance(value, Sample) else str(value),
)
def test_quota_parks_until_the_exhausted_units_reset(sample: Sample, until: float) -> None:
    report = event(sample)
    assert quota_wait(report, SETTINGS) == pytest.approx(until)
    bucket = BucketLearner(SETTINGS, 10.0, 100.0)
    decision = bucket.on_report(report, 100.0)
    assert (decision.state, bucket.factor) == ("exhausted", 1.0)
    assert bucket.exhausted_until == pytest.approx(100.0 + until)


def test_openai_insufficient_quota_without_reset_parks_for_the_default() -> None:
    bucket = BucketLearner(SETTINGS, 10.0, 0.0)
    bucket.on_report(event(OPENAI_INSUFFICIENT_QUOTA), 0.0)
    assert bucket.state(1.0) == "exhausted"
    # The exhausted units' resets are short (6 ms, 0 s) and none is at 0: the default applies.
    assert bucket.exhausted_until == pytest.approx(SETTINGS.quota_default_pause)


@pytest.mark.parametrize(
    "sample",
    [GITHUB_SECONDARY_403, ANTHROPIC_TOKENS_429, ANTHROPIC_TOKENS_403, GITHUB_PRIMARY_403_SOON],
    ids=lambda value: value.name,
)
def test_rate_limits_never_disable(sample: Sample) -> None:
    bucket = BucketLearner(SETTINGS, 10.0, 0.0)
    for _ in range(5):
        bucket.on_report(event(sample), 0.0)
    assert bucket.state(0.0) in ("paused", "cooling_down")
    assert bucket.disabled_until is None
    assert bucket.factor < 1.0  # the adaptive policy slowed down (one round)


def test_github_secondary_pauses_for_its_retry_after() -> None:
    bucket = BucketLearner(SETTINGS, 10.0, 0.0)
    bucket.on_report(event(GITHUB_SECONDARY_403), 5.0)
    assert bucket.pause_until == pytest.approx(65.0)


def test_529_pauses_briefly_without_a_cut() -> None:
    bucket = BucketLearner(SETTINGS, 10.0, 0.0)
    decisions = [bucket.on_report(event(ANTHROPIC_529), 1.0) for _ in range(5)]
    decision = decisions[0]
    assert (decision.state, bucket.factor, bucket.streak) == ("paused", 1.0, 0)
    assert bucket.pause_until == pytest.approx(1.0 + SETTINGS.overload_pause)


@pytest.mark.parametrize("sample", [AUTH_401, AUTH_403], ids=lambda value: value.name)
def test_real_auth_failures_disable(sample: Sample) -> None:
    bucket = BucketLearner(SETTINGS, 10.0, 0.0)
    decision = bucket.on_report(event(sample), 1.0)
    assert (decision.action, decision.state) == ("disabled", "disabled")
