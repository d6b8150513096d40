"""Header value parsers: counts, Go durations, HTTP-dates, RFC 3339 and resets."""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime

import pytest

from ratelimitd.core.headers.values import (
    parse_absolute_reset,
    parse_count,
    parse_duration,
    parse_http_date,
    parse_reset,
    parse_retry_after,
    parse_rfc3339,
    unit_name,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # OpenAI docs samples and the examples
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        # Groq (console.groq.com/docs/rate-limits)
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("0s", 0.0),
        ("1.5us", 1.5e-6),
        ("250µs", 250e-6),
        ("3ns", 3e-9),
        # Azure OpenAI sends plain seconds (openai/openai-dotnet#838); Crossref "60s"
        ("0", 0.0),
        ("60", 60.0),
        (" 60s ", 60.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "6d", "-1s", "1m-2s", "1 s", "1e3s", "m1", "nan"])
def test_bad_durations(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize("text", ["0", "5000", "1.5", " 7 "])
def test_counts(text: str) -> None:
    assert parse_count(text) == float(text)


@pytest.mark.parametrize("text", ["", "-1", "+1", "1e3", "NaN", "inf", "0x10", "1,000", "1.", "9" * 300])
def test_bad_counts(text: str) -> None:
    assert parse_count(text) is None


@pytest.mark.parametrize(
    "text",
    [
        # RFC 9110 §5.6.7: the preferred form and the two obsolete ones
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Fri, 31 Dec 1999 23:59:59 GMT",
        "Wed, 29 Feb 2012 00:00:00 GMT",
    ],
)
def test_http_dates_agree_with_the_standard_library(text: str) -> None:
    expected = parsedate_to_datetime(text)
    if expected.tzinfo is None:  # asctime carries no zone; HTTP says it is GMT
        expected = expected.replace(tzinfo=UTC)
    assert parse_http_date(text) == expected.timestamp()


@pytest.mark.parametrize(
    "text",
    [
        "Wed, 30 Feb 2011 00:00:00 GMT",
        "Sun, 06 Nov 1994 08:49:37 +0100",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "2025-08-21T12:40:59Z",
        "yesterday",
    ],
)
def test_bad_http_dates(text: str) -> None:
    assert parse_http_date(text) is None


def test_rfc3339() -> None:
    base = parse_rfc3339("2025-08-21T12:40:59Z")
    assert base == parsedate_to_datetime("Thu, 21 Aug 2025 12:40:59 GMT").timestamp()
    assert parse_rfc3339("2025-08-21T14:40:59+02:00") == base
    assert parse_rfc3339("2025-08-21t12:40:59.5z") == pytest.approx(base + 0.5)
    for bad in ("2025-08-21T12:40:59", "2025-08-21", "1724244059", "2025-13-21T12:40:59Z"):
        assert parse_rfc3339(bad) is None


def test_retry_after_delta_date_and_clamp() -> None:
    date = "Fri, 31 Dec 1999 23:59:59 GMT"
    moment = parsedate_to_datetime(date).timestamp()
    assert parse_retry_after("120", now_wall=0.0) == 120.0
    assert parse_retry_after(date, now_wall=moment - 120) == 120.0
    assert parse_retry_after(date, now_wall=moment + 5) == 0.0
    assert parse_retry_after("-1", now_wall=0.0) is None


def test_reset_reads_delta_epoch_and_date() -> None:
    now = 1_700_000_000.0
    assert parse_reset("30", now) == 30.0
    assert parse_reset("1700000030", now) == 30.0  # GitHub: UTC epoch seconds
    assert parse_reset("1600000000", now) == 0.0  # an epoch in the past
    assert parse_reset("Tue, 14 Nov 2023 22:14:00 GMT", now) == pytest.approx(
        parsedate_to_datetime("Tue, 14 Nov 2023 22:14:00 GMT").timestamp() - now
    )
    assert parse_reset("later", now) is None


def test_absolute_reset_rfc3339_or_epoch() -> None:
    now = parse_rfc3339("2025-12-17T04:00:00Z")
    assert now is not None
    assert parse_absolute_reset("2025-12-17T04:00:10Z", now) == 10.0
    # anthropic-ratelimit-unified-*-reset carries unix seconds
    assert parse_absolute_reset(str(int(now) + 3600), now) == 3600.0


def test_unit_names() -> None:
    assert unit_name("input-tokens") == "input_tokens"
    assert unit_name(" Content-Bytes ") == "content_bytes"
    assert unit_name("tokens_usage_based") == "tokens_usage_based"


@pytest.mark.parametrize(
    ("text", "count", "duration"),
    [
        ("5000", 5000.0, 5000.0),
        ("0", 0.0, 0.0),
        (" 12 ", 12.0, 12.0),
        ("1.5", 1.5, 1.5),
        ("6ms", None, 0.006),
        ("6m0s", None, 360.0),
        ("١٢", None, None),  # digits, but not ASCII ones
        ("²", None, None),
        ("9" * 257, None, None),  # longer than any header value we read
        ("", None, None),
    ],
)
def test_counts_and_durations_read_the_same_the_second_time(
    text: str, count: float | None, duration: float | None
) -> None:
    for _ in range(2):  # the second read of a duration comes from what the first one found
        assert parse_count(text) == count
        assert parse_duration(text) == duration
