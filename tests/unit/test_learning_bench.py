"""The learning benchmark's targets and baselines on the deterministic simulation (issue 6)."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ lives beside the package, not inside it; pytest puts only tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import math
import random

import pytest

from bench.learning import Row, quick, settle_rate_times
from bench.sim.engine import Outcome
from bench.sim.provider import HiddenProvider


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
    # The same changes measured on the learned rate (the controlled variable, pauses skipped):
    # at the capacity from the start, 25 s after the drop (> 20 s: not met either; the drop's
    # last cut lands at 0.87 of the new capacity), 25 s after the return.
    assert b.settle_rate[0] == 0.0
    drop_rate, return_rate = b.settle_rate[1], b.settle_rate[2]
    assert drop_rate is not None
    assert 20 < drop_rate <= 30
    assert return_rate is not None
    assert return_rate <= 30
    a_rate = a.settle_rate[0]
    assert a_rate is not None
    assert a_rate <= 20
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


def _trace(levels: dict[float, float | None]) -> list[tuple[float, float | None]]:
    """A 0.1 s sampled trace of 20 s holding each level from its time on (None: paused)."""
    trace: list[tuple[float, float | None]] = []
    level: float | None = None
    for tenth in range(200):
        level = levels.get(tenth / 10, level)  # a None value is a pause, kept
        trace.append((tenth / 10, level))
    return trace


def test_settle_rate_skips_pauses_and_must_stay_in_the_band() -> None:
    provider = HiddenProvider(((0, 50), (10, 20)), random.Random(0))
    outcome = Outcome(20.0, provider.capacity_integral(20.0))
    # 60/s is out of 50 +-10 %; after the drop 21/s is in 20 +-10 %, 15/s leaves it again.
    outcome.rate_trace = _trace({0.0: 60.0, 2.0: 50.0, 12.0: 21.0, 14.0: 15.0, 16.0: 19.0})
    assert settle_rate_times(outcome, provider) == (2.0, 6.0)
    # A pause is not a rate change: in the band before and after it, settled before it.
    outcome.rate_trace = _trace({0.0: 50.0, 12.0: 21.0, 14.0: None, 16.0: 19.0})
    assert settle_rate_times(outcome, provider) == (0.0, 2.0)
    outcome.rate_trace = _trace({0.0: 50.0, 10.0: 23.0})  # 15 % above the new capacity
    assert settle_rate_times(outcome, provider) == (0.0, None)
    outcome.rate_trace = _trace({0.0: math.inf})  # unlimited (botocore before its first 429)
    assert settle_rate_times(outcome, provider) == (None, None)
