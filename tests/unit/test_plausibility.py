"""Reset and Retry-After values: their unit by magnitude, and long waits that need evidence.

The magnitudes (table below) are the four ways providers write a reset as a bare number; the
headers of the scenario tests are the ones that misled the daemon before: Prisjakt's
`X-Rate-Limit-Reset: 600000` documented in milliseconds (developer.prisjakt.nu/docs/
sections/rate-limit) read as a week of seconds.
"""

from __future__ import annotations

import pytest

from ratelimitd.core.headers.conventions import HeaderConventions
from ratelimitd.core.headers.parse import parse_headers
from ratelimitd.core.headers.plausibility import seconds_until

NOW = 1_764_930_000.0  # 2025-12-05T10:20:00Z
MAX_PAUSE = 300.0
# https://developer.prisjakt.nu/docs/sections/rate-limit ("Example", a 429)
PRISJAKT = {"X-Rate-Limit-Limit": "10000", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "600000"}


@pytest.mark.parametrize(
    ("number", "delay_unit", "seconds"),
    [
        (30, "seconds", 30.0),  # a delay in seconds
        (30_000, "milliseconds", 30.0),  # a delay in milliseconds, as documented
        (600_000, "seconds", 600_000.0),  # as written: the wait check decides (below)
        (NOW + 45, "seconds", 45.0),  # a unix time in seconds
        (NOW + 45, "milliseconds", 45.0),  # ... whatever the delay unit: 31 years is no delay
        ((NOW + 45) * 1000, "seconds", 45.0),  # a unix time in milliseconds (OpenRouter)
        ((NOW + 45) * 1000, "milliseconds", 45.0),
        (NOW - 3600, "seconds", 0.0),  # a unix time in the past: no wait
        ((NOW - 3600) * 1000, "seconds", 0.0),
        (999_999_999, "seconds", 999_999_999.0),  # just below the epoch range: a delay
        (1e9, "seconds", 0.0),  # 2001-09-09 as a unix time: long past
    ],
)
def test_each_magnitude(number: float, delay_unit: str, seconds: float) -> None:
    assert seconds_until(number, NOW, delay_unit) == pytest.approx(seconds)  # type: ignore[arg-type]


def test_a_week_of_seconds_without_evidence_is_capped_and_counted() -> None:
    raw = parse_headers(PRISJAKT, status=429, now_wall=NOW)
    assert raw.units["requests"].reset_after == 600_000.0
    assert raw.classify() == "quota_exhausted"  # what parked a bucket for a week
    hint = parse_headers(PRISJAKT, status=429, now_wall=NOW, max_pause=MAX_PAUSE)
    assert hint.units["requests"].reset_after == MAX_PAUSE
    assert hint.reset_after == MAX_PAUSE
    assert hint.suspicious == ("requests reset 600000 s > max_pause 300 s without a window",)
    assert hint.classify() == "rate_limited"
    assert hint.suggested_pause() == MAX_PAUSE


def test_the_profiles_unit_reads_milliseconds_and_its_window_is_the_evidence() -> None:
    # Prisjakt documents the reset in milliseconds and the limit per hour.
    hourly = HeaderConventions(delay_unit="milliseconds", quota_windows={"requests": 3600.0})
    hint = parse_headers(PRISJAKT, status=429, now_wall=NOW, conventions=hourly, max_pause=MAX_PAUSE)
    assert hint.units["requests"].reset_after == 600.0
    assert hint.suspicious == ()
    assert hint.classify(long_reset_threshold=599) == "quota_exhausted"


def test_the_right_unit_without_a_window_is_still_capped() -> None:
    millis = HeaderConventions(delay_unit="milliseconds")
    hint = parse_headers(PRISJAKT, status=429, now_wall=NOW, conventions=millis, max_pause=MAX_PAUSE)
    assert hint.units["requests"].reset_after == MAX_PAUSE
    assert len(hint.suspicious) == 1


def test_a_quota_reason_is_evidence() -> None:
    hint = parse_headers(PRISJAKT, status=429, now_wall=NOW, max_pause=MAX_PAUSE, quota_evidence=True)
    assert hint.units["requests"].reset_after == 600_000.0
    assert hint.suspicious == ()


def test_an_announced_window_is_evidence() -> None:
    # GitHub, core resource: 0 left, reset 50 minutes away, inside its hour.
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(int(NOW + 3000)),
        "x-ratelimit-resource": "core",
    }
    hint = parse_headers(headers, status=403, now_wall=NOW, max_pause=MAX_PAUSE)
    assert hint.units["requests"].reset_after == 3000.0
    assert hint.suspicious == ()
    without_resource = dict(headers)
    del without_resource["x-ratelimit-resource"]
    capped = parse_headers(without_resource, status=403, now_wall=NOW, max_pause=MAX_PAUSE)
    assert capped.units["requests"].reset_after == MAX_PAUSE


def test_a_reset_past_its_own_window_is_capped() -> None:
    # Crossref-style: 50 per second, but "0 left until an hour from now".
    headers = {
        "x-rate-limit-limit": "50",
        "x-rate-limit-interval": "1s",
        "x-rate-limit-remaining": "0",
        "x-rate-limit-reset": "3600",
    }
    hint = parse_headers(headers, status=429, now_wall=NOW, max_pause=MAX_PAUSE)
    assert hint.units["requests"].reset_after == MAX_PAUSE
    assert len(hint.suspicious) == 1


def test_a_unit_that_is_not_spent_pauses_nothing_and_is_left_alone() -> None:
    headers = {"x-ratelimit-limit": "100", "x-ratelimit-remaining": "40", "x-ratelimit-reset": "86400"}
    hint = parse_headers(headers, status=200, now_wall=NOW, max_pause=MAX_PAUSE)
    assert hint.units["requests"].reset_after == 86400.0
    assert hint.suspicious == ()


@pytest.mark.parametrize(
    ("headers", "quota_evidence", "retry_after", "suspicious"),
    [
        ({"Retry-After": "120"}, False, 120.0, 0),
        ({"Retry-After": "86400"}, False, MAX_PAUSE, 1),
        ({"Retry-After": "86400"}, True, 86400.0, 0),
        ({"retry-after-ms": "600000"}, False, MAX_PAUSE, 1),
        # A Retry-After that restates a believed reset of a spent unit (GitHub core, 50 min).
        (
            {
                "Retry-After": "3000",
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(int(NOW + 3000)),
                "x-ratelimit-resource": "core",
            },
            False,
            3000.0,
            0,
        ),
    ],
)
def test_retry_after_past_max_pause(
    headers: dict[str, str], quota_evidence: bool, retry_after: float, suspicious: int
) -> None:
    hint = parse_headers(
        headers, status=429, now_wall=NOW, max_pause=MAX_PAUSE, quota_evidence=quota_evidence
    )
    assert hint.retry_after == retry_after
    assert len(hint.suspicious) == suspicious


def test_without_max_pause_nothing_is_capped() -> None:
    # The client's retry helper reads Retry-After as written and applies its own cap.
    hint = parse_headers({"Retry-After": "86400", **PRISJAKT}, status=429, now_wall=NOW)
    assert hint.retry_after == 86400.0
    assert hint.suspicious == ()
