"""Rates and periods written for people: table-driven, pure."""

from __future__ import annotations

import pytest

from ratelimitd.core.rates import format_rate, parse_period, parse_rate


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("60/minute", 60.0, 60.0),
        ("60/min", 60.0, 60.0),
        ("60/minutes", 60.0, 60.0),
        ("60/m", 60.0, 60.0),
        ("5000/hour", 5000.0, 3600.0),
        ("5000/hours", 5000.0, 3600.0),
        ("5000/h", 5000.0, 3600.0),
        ("50/s", 50.0, 1.0),
        ("50/sec", 50.0, 1.0),
        ("50/secs", 50.0, 1.0),
        ("50/second", 50.0, 1.0),
        ("50/seconds", 50.0, 1.0),
        ("100/10s", 100.0, 10.0),
        ("100/10 seconds", 100.0, 10.0),
        ("1/2.5m", 1.0, 150.0),
        ("0.5/s", 0.5, 1.0),
        ("10000/day", 10000.0, 86400.0),
        ("10000/d", 10000.0, 86400.0),
        ("  7 / Minute ", 7.0, 60.0),
        ("7/MINUTE", 7.0, 60.0),
    ],
)
def test_parse_rate(text: str, count: float, period: float) -> None:
    assert parse_rate(text) == (count, period)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "60",
        "60/",
        "/minute",
        "60/fortnight",
        "-1/s",
        "0/s",
        "1/0s",
        "1e3/s",
        "ten/s",
        "60 per minute",
        "60/minute/s",
        "100/ms",  # milliseconds are not minutes
        "5/hs",
        "5/ss",
        "inf/s",
        "nan/s",
    ],
)
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"got|must"):
        parse_rate(text)


def test_parse_rate_message_names_the_input() -> None:
    with pytest.raises(ValueError, match=r"'60/fortnight'") as info:
        parse_rate("60/fortnight")
    assert "60/minute" in str(info.value)  # shows the expected form


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1, 1.0),
        (2.5, 2.5),
        ("second", 1.0),
        ("minute", 60.0),
        ("minutes", 60.0),
        ("hour", 3600.0),
        ("day", 86400.0),
        ("2h", 7200.0),
        ("10s", 10.0),
        ("10 min", 600.0),
    ],
)
def test_parse_period(value: str | float, seconds: float) -> None:
    assert parse_period(value) == seconds


@pytest.mark.parametrize(
    "value", [0, -1, 0.0, float("inf"), float("nan"), True, "fortnight", "ms", "", "0s", "-5s"]
)
def test_parse_period_rejects(value: str | float) -> None:
    with pytest.raises(ValueError, match=r"got"):
        parse_period(value)


@pytest.mark.parametrize(
    ("per_second", "period", "text"),
    [
        (500 / 60, 60.0, "500/min"),  # a limit's own period wins
        (500 / 60, None, "8.333/s"),  # without one: the largest period with >= 1 unit, s first
        (0.5, None, "30/min"),
        (1 / 600, None, "6/h"),
        (1 / 86400, None, "1/day"),
        (200000 / 60, 60.0, "200,000/min"),  # thousands separated from 10,000 up
        (1e6, 1.0, "1,000,000/s"),
        (10.0, 10.0, "100/10s"),
        (0.0, None, "0/day"),
        (float("nan"), None, "-"),
    ],
)
def test_format_rate_one_format_everywhere(per_second: float, period: float | None, text: str) -> None:
    assert format_rate(per_second, period) == text


def test_format_rate_reads_back_as_the_same_rate() -> None:
    count, period = parse_rate(format_rate(500 / 60, 60.0).replace("min", "minute"))
    assert count / period == pytest.approx(500 / 60)
