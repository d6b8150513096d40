"""Our Structured Field parser vs `http-sf` (by RFC 9651's editor), in one run.

Two measures: how many of httpwg's structured-field-tests parsing cases each passes
(tests/data/structured-field-tests/), and microseconds per parse of the RateLimit
headers providers send (`RateLimit-Policy` and `RateLimit` as SF Lists, the draft-07
`RateLimit` SF Dictionary, a list-valued `RateLimit-Limit`).
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final

import http_sf

from ratelimitd.core.headers import structured_fields as sf

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("SUITE", "main", "measure_speed", "measure_suite", "parse_as_suite_json")

SUITE: Final = Path(__file__).resolve().parent.parent / "tests" / "data" / "structured-field-tests"
# (header type, value): what RateLimit-aware providers send (docs/headers.md).
SAMPLES: Final = (
    ("list", '"burst";q=100;w=60,"daily";q=1000;w=86400'),
    ("list", '"default";r=50;t=30'),
    ("dictionary", "limit=100, remaining=50, reset=5"),
    ("list", "100, 100;w=60, 10000;w=86400"),
)
N: Final = 20_000


def _ours_bare(value: object) -> object:
    if isinstance(value, sf.Token):
        return {"__type": "token", "value": value.value}
    if isinstance(value, bytes):
        return {"__type": "binary", "value": base64.b32encode(value).decode()}
    if isinstance(value, sf.Date):
        return {"__type": "date", "value": value.seconds}
    if isinstance(value, sf.DisplayString):
        return {"__type": "displaystring", "value": value.value}
    return value


def _ours_member(item: sf.Item) -> object:
    params = [[key, _ours_bare(value)] for key, value in item.params.items()]
    if isinstance(item.value, tuple):
        return [[_ours_member(inner) for inner in item.value], params]
    return [_ours_bare(item.value), params]


def parse_as_suite_json(kind: str, text: str) -> object:
    """Our parse of `text` in the suite's JSON form (`__type` objects for non-JSON types)."""
    if kind == "item":
        return _ours_member(sf.parse_item(text))
    if kind == "list":
        return [_ours_member(item) for item in sf.parse_list(text)]
    return [[key, _ours_member(item)] for key, item in sf.parse_dictionary(text).items()]


def _theirs_bare(value: object) -> object:
    if isinstance(value, http_sf.Token):
        return {"__type": "token", "value": str(value)}
    if isinstance(value, bytes):
        return {"__type": "binary", "value": base64.b32encode(value).decode()}
    if isinstance(value, datetime.datetime):
        return {"__type": "date", "value": int(value.timestamp())}
    if isinstance(value, http_sf.DisplayString):
        return {"__type": "displaystring", "value": str(value)}
    if isinstance(value, Decimal):
        return float(value)
    return value


def _theirs_member(member: object) -> object:
    assert isinstance(member, tuple)
    value: object = member[0]
    params: dict[str, object] = member[1]
    pairs = [[key, _theirs_bare(v)] for key, v in params.items()]
    if isinstance(value, list):
        return [[_theirs_member(inner) for inner in value], pairs]
    return [_theirs_bare(value), pairs]


def _theirs(kind: str, text: str) -> object:
    parsed: object = http_sf.parse(text.encode(), tltype=kind)
    if kind == "item":
        return _theirs_member(parsed)
    if kind == "list":
        return [_theirs_member(member) for member in parsed]  # type: ignore[attr-defined]
    return [[key, _theirs_member(member)] for key, member in parsed.items()]  # type: ignore[attr-defined]


def _passes(parse: Callable[[str, str], object], case: dict[str, object]) -> bool:
    raw = case["raw"]
    assert isinstance(raw, list)
    try:
        got = parse(str(case["header_type"]), ", ".join(raw))
    except Exception:  # both parsers' failure is the expected outcome of must_fail cases
        return bool(case.get("must_fail") or case.get("can_fail"))
    if case.get("must_fail"):
        return False
    return json.dumps(got) == json.dumps(case["expected"])


def measure_suite() -> dict[str, tuple[int, int]]:
    """(passed, total) on every parsing case of the suite, per parser."""
    cases = [case for path in sorted(SUITE.glob("*.json")) for case in json.loads(path.read_text())]
    return {
        name: (sum(_passes(parse, case) for case in cases), len(cases))
        for name, parse in (("ratelimitd", parse_as_suite_json), ("http-sf", _theirs))
    }


def measure_speed(n: int = N, rounds: int = 5) -> dict[str, float]:
    """Microseconds per parse of one RateLimit header (average over SAMPLES), best of
    `rounds`; the two parsers alternate within each round so load on the machine hits both."""
    contenders = (("ratelimitd", _ours_raw), ("http-sf", _theirs_raw))
    best = dict.fromkeys((name for name, _ in contenders), float("inf"))
    for _ in range(rounds):
        for name, parse in contenders:
            start = time.perf_counter()
            for _ in range(n):
                for kind, text in SAMPLES:
                    parse(kind, text)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds / (n * len(SAMPLES)) * 1e6 for name, seconds in best.items()}


def _ours_raw(kind: str, text: str) -> object:
    return sf.parse_list(text) if kind == "list" else sf.parse_dictionary(text)


def _theirs_raw(kind: str, text: str) -> object:
    return http_sf.parse(text.encode(), tltype=kind)


def main(quick: bool = False) -> None:
    suite = measure_suite()
    speed = measure_speed(2_000 if quick else N)
    print("\n## structured fields: httpwg suite and RateLimit header parse time (same run)")
    print(f"{'parser':<12} {'suite passed':>14} {'µs/header':>10}")
    for name, (passed, total) in suite.items():
        print(f"{name:<12} {f'{passed}/{total}':>14} {speed[name]:>10.2f}")


if __name__ == "__main__":
    main()
