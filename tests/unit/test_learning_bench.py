"""The learning benchmark's targets and baselines on the deterministic simulation (issue 6)."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ lives beside the package, not inside it; pytest puts only tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytest

from bench.learning import Row, quick


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str], Row]:
    return {(row.scenario, row.policy): row for row in quick(seed=1)}


def test_adaptive_meets_the_issue_targets(rows: dict[tuple[str, str], Row]) -> None:
    a, b, c = rows["a", "adaptive"], rows["b", "adaptive"], rows["c", "adaptive"]
    assert a.goodput >= 0.98  # issue: 0.95; botocore reaches 0.97 here
    assert a.limited_share <= 0.01
    assert rows["a+r", "adaptive"].goodput >= 0.97  # rejections charged: botocore 0.48
    assert b.goodput >= 0.95
    # b.settle[1] (<= 20 s after the drop) is not met: each whole-second Retry-After pause
    # costs >= 10% of the 10 s window; see docs/learning.md, "(b): why ...".
    after_return = b.settle[2]
    assert after_return is not None
    assert after_return <= 60
    assert c.goodput >= 0.85
    assert rows["d", "adaptive"].goodput == pytest.approx(30 / 50, abs=0.01)  # the configured rate
    assert rows["d+h", "adaptive"].goodput >= 0.95
    assert rows["e", "adaptive"].limited_share <= 0.01
    assert rows["e", "adaptive"].goodput >= 0.97
    assert rows["f", "adaptive"].backlog <= 40  # only what is in flight or queued a moment


def test_baselines_stay_near_their_reference(rows: dict[tuple[str, str], Row]) -> None:
    """A broken baseline would make the comparison dishonest: pin them (docs/learning.md)."""
    seed, boto, adaptive = rows["a", "seed"], rows["a", "botocore"], rows["a", "adaptive"]
    assert 0.35 <= seed.goodput <= 0.45  # the seed's cuts reach their 80-point floor
    assert boto.goodput >= 0.9  # botocore's CUBIC limiter does well on a plain token bucket
    assert adaptive.goodput > max(seed.goodput, boto.goodput)
