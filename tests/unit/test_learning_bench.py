"""The learning benchmark's targets and baselines on the deterministic simulation."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ lives beside the package, not inside it; pytest puts only tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import math
import random

import pytest

from bench.learning import (
    SCENARIOS,
    Row,
    format_seeds,
    issue_targets,
    rows_by_seed,
    run_scenario,
    settle_rate_times,
)  # fmt: skip
from bench.sim.engine import Outcome
from bench.sim.provider import HiddenProvider

SEEDS = (1, 2, 3, 4, 5, 6)
# The module's fixture runs the simulations (about 20 s of CPU); a loaded machine stretches that.
pytestmark = pytest.mark.timeout(300)
SCENARIO = {s.name: s for s in SCENARIOS}


@pytest.fixture(scope="module")
def by_seed() -> dict[int, dict[tuple[str, str], Row]]:
    """`quick` rows for several seeds (one process each): the targets must not hang on one."""
    return rows_by_seed(SEEDS)


@pytest.mark.parametrize("seed", SEEDS)
def test_adaptive_meets_the_targets(by_seed: dict[int, dict[tuple[str, str], Row]], seed: int) -> None:
    """The targets of docs/benchmarks.md for `adaptive`, on every seed (the misses are guarded)."""
    rows = by_seed[seed]
    a, b, c = rows["a", "adaptive"], rows["b", "adaptive"], rows["c", "adaptive"]
    assert a.goodput >= 0.95
    assert a.limited_share <= 0.01
    assert b.goodput >= 0.95
    # "Settled <= 20 s after the drop", on both measures (missed on 1 seed of 20 in the
    # benchmark: docs/benchmarks.md).
    assert b.settle_rate[1] is not None
    assert b.settle_rate[1] <= 20
    assert b.settle[1] is not None
    assert b.settle[1] <= 20
    # "settled <= 60 s after the return", under both settle measures.
    for after_return in (b.settle[2], b.settle_rate[2]):
        assert after_return is not None
        assert after_return <= 60
    assert c.goodput >= 0.85
    assert rows["c+ra", "adaptive"].goodput >= 0.85  # random 429s with Retry-After: 1
    assert rows["c+ra20", "adaptive"].goodput >= 0.95 * 0.8
    assert rows["c+hiccup", "adaptive"].goodput >= 0.95 * (1 - SCENARIO["c+hiccup"].noise_share)
    # Target 0.95 x what the noise leaves, missed on some seeds: guarded against a collapse.
    assert rows["c+ra3", "adaptive"].goodput >= 0.8
    assert rows["b+ra", "adaptive"].goodput >= 0.7
    assert rows["d", "adaptive"].goodput == pytest.approx(30 / 50, abs=0.01)  # the configured rate
    assert rows["d+h", "adaptive"].goodput >= 0.95
    assert rows["e", "adaptive"].limited_share <= 0.01
    # "No backlog at the end": at most ~2x what is in flight at 40/s with ~0.3 s answers.
    assert rows["f", "adaptive"].backlog <= 40


def test_the_seeds_summary_marks_what_is_missed(by_seed: dict[int, dict[tuple[str, str], Row]]) -> None:
    """`--seeds` prints every target with its value; a missed one is marked, a met one not."""
    checks = issue_targets(by_seed[SEEDS[0]])
    assert len(checks) == 14
    met = {target: ok for target, _, ok in checks}
    assert met["a >= 0.95, <= 1% 429s"]
    assert met["c+ra >= 0.85"]
    summary = format_seeds({SEEDS[0]: {**by_seed[SEEDS[0]]}}).splitlines()[2]
    assert summary.count("!") == sum(not ok for ok in met.values())


@pytest.mark.parametrize("seed", SEEDS)
def test_baselines_stay_near_their_reference(
    by_seed: dict[int, dict[tuple[str, str], Row]], seed: int
) -> None:
    """A broken baseline would make the comparison dishonest: pin them (docs/benchmarks.md)."""
    rows = by_seed[seed]
    seed_row, boto, adaptive = rows["a", "streak-v1"], rows["a", "botocore"], rows["a", "adaptive"]
    assert 0.35 <= seed_row.goodput <= 0.45  # the first release's cuts reach their 80-point floor
    assert boto.goodput >= 0.9  # botocore's CUBIC limiter does well on a plain token bucket
    assert adaptive.goodput > seed_row.goodput
    assert adaptive.limited_share < boto.limited_share


def test_streak_v1_stays_low_after_the_return_in_b() -> None:
    """The first release's streak policy: ~0.60 of capacity after a 50->20->50 step, never climbs back."""
    b = next(s for s in SCENARIOS if s.name == "b")
    row = run_scenario(b, "streak-v1", seed=1)
    after_return = sum(row.outcome.success_bins[240:600]) / (50 * 360)
    assert after_return == pytest.approx(0.60, abs=0.02)


def test_adaptive_beats_botocore_in_a(by_seed: dict[int, dict[tuple[str, str], Row]]) -> None:
    """(a) over every seed: more goodput than botocore's CUBIC limiter, at a tenth of its 429s."""
    ours = [by_seed[seed]["a", "adaptive"] for seed in SEEDS]
    boto = [by_seed[seed]["a", "botocore"] for seed in SEEDS]
    assert sum(r.goodput for r in ours) > sum(r.goodput for r in boto)
    assert max(r.limited_share for r in ours) * 5 < min(r.limited_share for r in boto)


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
