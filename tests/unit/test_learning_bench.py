"""The learning benchmark's targets on a shorter deterministic run (issue 6)."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ lives beside the package, not inside it; pytest puts only tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.learning import quick


def test_adaptive_meets_targets_in_a_and_c() -> None:
    rows = {row.scenario: row for row in quick(seed=1)}
    assert rows["a"].goodput >= 0.95
    assert rows["a"].limited_share <= 0.01
    assert rows["c"].goodput >= 0.85
