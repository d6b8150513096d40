"""Rates written for people: parse "60/minute", "5000/hour", "50/s", "100/10s", and print them back.

Pure: strings in, numbers out (and back); raises ValueError with a message for people.
"""

from __future__ import annotations

import math
import re

__all__ = ("PERIODS", "format_rate", "parse_period", "parse_rate")

PERIODS: dict[str, float] = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}

_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*([0-9]+(?:\.[0-9]+)?)?\s*([a-z]+)\s*$")


def _unit_seconds(word: str) -> float | None:
    """Seconds of a period name; plurals only of names longer than one letter ('ms' is not minutes)."""
    if word in PERIODS:
        return PERIODS[word]
    if len(word) > 2 and word.endswith("s") and word[:-1] in PERIODS:
        return PERIODS[word[:-1]]
    return None


def parse_period(value: str | float | int) -> float:
    """A period in seconds: a number of seconds, or a name (`second`, `minute`, `hour`, `day`)."""
    if isinstance(value, bool):
        raise ValueError(f"expected seconds or a period name, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)?\s*([a-z]+)\s*", value)
        unit = None if match is None else _unit_seconds(match.group(2))
        if match is None or unit is None:
            raise ValueError(f"expected seconds or one of second/minute/hour/day, got {value!r}")
        seconds = float(match.group(1) or 1) * unit
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"period must be > 0 seconds, got {value!r}")
    return seconds


def parse_rate(text: str) -> tuple[float, float]:
    """`"60/minute"` -> (count 60.0, period 60.0 s). Also `"100/10s"`, `"1/s"`, `"5000/hours"`."""
    match = _RATE.match(text.lower())
    unit = None if match is None else _unit_seconds(match.group(3))
    if match is None or unit is None:
        raise ValueError(f"expected '<count>/<period>' like '60/minute' or '100/10s', got {text!r}")
    count = float(match.group(1))
    period = float(match.group(2) or 1) * unit
    if count <= 0 or period <= 0:
        raise ValueError(f"rate must be > 0, got {text!r}")
    return count, period


_PERIOD_NAMES: dict[float, str] = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}


def format_rate(per_second: float, period: float | None = None) -> str:
    """A rate as people read it, the one format used everywhere: `8.333/s`, `500/min`, `12,000/h`.

    `period` is the limit's own period (seconds) when known, so a limit configured per minute
    reads per minute; without it the period is the largest of s, min, h, day in which at
    least one unit passes. Four significant digits; thousands separated from 10,000 up.
    """
    if not math.isfinite(per_second) or per_second < 0:
        return "-"
    if period is None or period <= 0:
        period = 86400.0
        for seconds in (1.0, 60.0, 3600.0):
            if per_second * seconds >= 1.0:
                period = seconds
                break
    amount = per_second * period
    text = f"{amount:,.0f}" if amount >= 10_000 else f"{amount:.4g}"
    suffix = _PERIOD_NAMES.get(float(period), f"{period:g}s")
    return f"{text}/{suffix}"
