"""The corpus of real rate-limit headers (tests/data/headers/, README.md there).

Every example is read as the daemon reads it: the provider's profile (trusted families and
header conventions) and a `max_pause` of 300 s. Every documented fact is checked against the
profile that claims to follow it.
"""

from __future__ import annotations

import math
import tomllib
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final

import pytest

from ratelimitd.core.headers.conventions import HeaderConventions
from ratelimitd.core.headers.parse import parse_headers
from ratelimitd.core.headers.profiles import PROFILES

CORPUS: Final = Path(__file__).resolve().parents[1] / "data" / "headers"
DOCS: Final = Path(__file__).resolve().parents[2] / "docs" / "headers.md"
MAX_PAUSE: Final = 300.0
UNIT_FIELDS: Final = ("limit", "remaining", "reset_after", "window")


def _load() -> dict[str, dict[str, Any]]:
    return {
        path.stem: tomllib.loads(path.read_text(encoding="utf-8")) for path in sorted(CORPUS.glob("*.toml"))
    }


FILES: Final = _load()
EXAMPLES: Final = [
    pytest.param(data, example, id=f"{stem}: {example['name']}")
    for stem, data in FILES.items()
    for example in data.get("examples", [])
]
DOCUMENTED: Final = [
    pytest.param(data, fact, id=f"{stem}: {index}")
    for stem, data in FILES.items()
    for index, fact in enumerate(data.get("documented", []))
]


def _conventions(data: dict[str, Any], example: dict[str, Any]) -> HeaderConventions | None:
    if "conventions" in example:
        return HeaderConventions(**example["conventions"])
    profile = PROFILES.get(data["profile"])
    return None if profile is None else profile.headers


def _now(example: dict[str, Any]) -> float:
    if "date" in example:
        return parsedate_to_datetime(example["date"]).timestamp()
    return float(example["now_wall"])


def test_every_profile_has_a_corpus_file_and_every_file_a_source() -> None:
    profiles_in_corpus = {data["profile"] for data in FILES.values() if data["profile"]}
    assert profiles_in_corpus == set(PROFILES)
    for stem, data in FILES.items():
        assert data["docs"].startswith("https://"), stem
        assert data.get("examples") or data.get("documented"), stem
        for entry in [*data.get("examples", []), *data.get("documented", [])]:
            assert entry["source"].startswith("https://"), stem


def test_docs_list_every_profile_with_its_source() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name, profile in PROFILES.items():
        assert f"| `{name}` |" in text, name
        assert profile.doc_url in text, name


@pytest.mark.parametrize(("data", "example"), EXAMPLES)
def test_example(data: dict[str, Any], example: dict[str, Any]) -> None:
    profile = PROFILES.get(data["profile"])
    hint = parse_headers(
        example["headers"],
        status=example["status"],
        now_wall=_now(example),
        trust=None if profile is None else profile.trust_headers,
        conventions=_conventions(data, example),
        max_pause=MAX_PAUSE,
    )
    expect = example["expect"]
    if "retry_after" in expect:
        assert hint.retry_after == pytest.approx(expect["retry_after"])
    else:
        assert hint.retry_after is None
    assert set(hint.units) == set(expect.get("units", {}))
    for unit, want in expect.get("units", {}).items():
        got = hint.units[unit]
        for field in UNIT_FIELDS:
            value = getattr(got, field)
            if field in want:
                assert value == pytest.approx(want[field]), (unit, field)
            else:
                assert value is None, (unit, field, value)
        if "rate_per_second" in want:
            assert got.rate_per_second == pytest.approx(want["rate_per_second"]), unit
    assert list(hint.malformed_names) == expect.get("malformed", [])
    if "suspicious" in expect:
        assert len(hint.suspicious) == expect["suspicious"], hint.suspicious
    if "kind" in expect:
        assert hint.classify() == expect["kind"]


@pytest.mark.parametrize(("data", "fact"), DOCUMENTED)
def test_documented(data: dict[str, Any], fact: dict[str, Any]) -> None:
    profile = PROFILES[data["profile"]]
    assert fact["says"]
    if data.get("headers") in ("none", "unread"):
        assert profile.trust_headers == frozenset({"retry_after"})
    unit = str(fact.get("unit", ""))
    if "rate" in fact:
        limit = profile.limit(unit)
        assert limit is not None, unit
        documented = fact["rate"] / fact["period"]
        if fact.get("at_most"):
            assert limit.rate_per_second <= documented
        else:
            assert math.isclose(limit.rate_per_second, documented), (limit.rate_per_second, documented)
    if "window" in fact:
        assert profile.headers.windows.get(unit) == fact["window"]
    if "quota_window" in fact:
        assert profile.headers.evidence_windows().get(unit) == fact["quota_window"]
    if "delay_unit" in fact:
        assert profile.headers.delay_unit == fact["delay_unit"]
