"""Every parsing case of httpwg's structured-field-tests (RFC 9651), vendored unchanged.

The JSON files and their licence are in tests/data/structured-field-tests/ (see NOTICE.md
there). A case passes when a `must_fail` value raises, and any other value parses to the
`expected` structure (README.md there describes the JSON mapping). `can_fail` cases may
also raise.
"""

from __future__ import annotations

import json
from typing import Final

import pytest

from bench.structured_fields import SUITE, parse_as_suite_json

CASES: Final = [
    pytest.param(case, id=f"{path.stem}: {case['name']}")
    for path in sorted(SUITE.glob("*.json"))
    for case in json.loads(path.read_text(encoding="utf-8"))
]


def _parse(header_type: str, text: str) -> object:
    # The suite's JSON form is built by the benchmark's harness, so both judge one mapping.
    assert header_type in {"item", "list", "dictionary"}
    return parse_as_suite_json(header_type, text)


def test_the_whole_suite_is_here() -> None:
    # 1,591 parsing cases at httpwg/structured-field-tests 1e280c3; a lost file fails here.
    assert len(CASES) == 1591


@pytest.mark.parametrize("case", CASES)
def test_case(case: dict[str, object]) -> None:
    raw = case["raw"]
    assert isinstance(raw, list)
    # Several field lines combine with ", " (RFC 9110 §5.3), as the suite intends.
    text = ", ".join(raw)
    header_type = str(case["header_type"])
    if case.get("must_fail"):
        with pytest.raises(ValueError):  # noqa: PT011 - the parser's one error type
            _parse(header_type, text)
        return
    try:
        got = _parse(header_type, text)
    except ValueError:
        if case.get("can_fail"):
            return
        raise
    # json.dumps tells True from 1 and 1 from 1.0, as the suite's JSON does.
    assert json.dumps(got) == json.dumps(case["expected"])


def test_the_benchmark_counts_both_parsers_on_the_same_cases() -> None:
    # bench/structured_fields.py compares us with http-sf; its harness must agree with this one.
    from bench.structured_fields import measure_suite

    assert measure_suite() == {"ratelimitd": (1591, 1591), "http-sf": (1591, 1591)}
