"""Learning benchmark: the real policy code against a provider with a hidden limit.

`python -m bench.learning [--quick] [--seed N] [--no-plots] [--seeds 1-12] [--provider-burst S]`:
prints one row per scenario and policy and writes bench/out/learning_<scenario>.png (allowed
rate against hidden capacity). Virtual time, deterministic per seed; the whole table takes well
under two minutes.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bench.sim.clients import BotoClient, DaemonClient, VirtualClock
from bench.sim.engine import Outcome, Workload, simulate
from bench.sim.provider import Hiccups, HiddenProvider
from ratelimitd.core.learning.learner import LearningSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.sim.engine import ClientSide

__all__ = (
    "SCENARIOS", "Row", "Scenario", "issue_targets", "main", "rows_by_seed", "run", "run_scenario",
)  # fmt: skip

# streak-v1: the streak policy as first released (no Retry-After pauses); +pauses honours them.
PolicyName = Literal["static", "streak-v1", "streak-v1+pauses", "adaptive", "botocore"]
POLICIES: tuple[PolicyName, ...] = ("static", "streak-v1", "streak-v1+pauses", "adaptive", "botocore")
OUT_DIR = Path(__file__).resolve().parent / "out"
_SETTLE_WINDOW = 10  # seconds of successes averaged when judging "settled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    title: str
    configured: float
    steps: tuple[tuple[float, float], ...]
    workload: Workload = field(default_factory=Workload)
    noise: float = 0.0
    headers: bool = False
    pacing: bool = False
    charge_rejected: bool = False  # the provider also counts rejected attempts (OpenAI's rule)
    provider_burst: float = 0.25  # seconds of its rate the provider's bucket holds
    noise_retry_after: float | None = None  # the Retry-After the random 429s carry (None: none)
    hiccups: Hiccups | None = None  # clustered random 429s instead of (or on top of) `noise`

    @property
    def noise_share(self) -> float:
        """The expected share of answers the random 429s take (capacity the policy cannot use)."""
        share = self.noise
        if self.hiccups is not None:
            h = self.hiccups
            busy = h.length / (h.length + h.every)
            share = share * (1 - busy) + h.share * busy
        return share


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(name="a", title="configured 2x the hidden rate", configured=100.0, steps=((0, 50),)),
    Scenario(
        name="a+r", title="(a), rejected attempts count too", configured=100.0,
        steps=((0, 50),), charge_rejected=True,
    ),
    Scenario(
        name="b", title="hidden 50->20->50 at 120 s and 240 s", configured=50.0,
        steps=((0, 50), (120, 20), (240, 50)),
    ),
    Scenario(name="c", title="10% random 429s", configured=50.0, steps=((0, 50),), noise=0.1),
    Scenario(
        name="c+ra", title="10% random 429s with Retry-After: 1", configured=50.0,
        steps=((0, 50),), noise=0.1, noise_retry_after=1.0,
    ),
    Scenario(
        name="c+ra3", title="5% random 429s with Retry-After: 3", configured=50.0,
        steps=((0, 50),), noise=0.05, noise_retry_after=3.0,
    ),
    Scenario(
        name="c+ra20", title="20% random 429s with Retry-After: 1", configured=50.0,
        steps=((0, 50),), noise=0.2, noise_retry_after=1.0,
    ),
    Scenario(
        name="c+hiccup", title="hiccups: 3 s of 50% 429s (Retry-After: 1) every ~30 s",
        configured=50.0, steps=((0, 50),), noise_retry_after=1.0,
        hiccups=Hiccups(every=30.0, length=3.0, share=0.5),
    ),
    Scenario(
        name="b+ra", title="(b) with 10% random 429s carrying Retry-After: 1", configured=50.0,
        steps=((0, 50), (120, 20), (240, 50)), noise=0.1, noise_retry_after=1.0,
    ),
    Scenario(name="d", title="configured below hidden, no headers", configured=30.0, steps=((0, 50),)),
    Scenario(
        name="d+h", title="configured below hidden, limit headers + PACING", configured=30.0,
        steps=((0, 50),), headers=True, pacing=True,
    ),
    Scenario(
        name="e", title="8 processes x 4 workers, half echo permits", configured=100.0,
        steps=((0, 50),),
        workload=Workload(processes=8, workers=4, echo_permit=lambda process: process % 2 == 0),
    ),
    Scenario(
        name="f", title="open loop, Poisson 40/s on b's profile", configured=50.0,
        steps=((0, 50), (120, 20), (240, 50)), workload=Workload(open_rate=40.0, processes=8),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    policy: str
    goodput: float  # successes / integral of the hidden capacity
    limited_share: float  # attempts answered 429 / attempts
    settle: tuple[float | None, ...]  # goodput measure: s after each capacity change (None: never)
    settle_rate: tuple[float | None, ...]  # learned-rate measure, same changes (None: never)
    wait_p50: float
    wait_p99: float
    backlog: int
    outcome: Outcome


def settings_for(policy: PolicyName, scenario: Scenario) -> LearningSettings:
    """`streak-v1` is the streak policy as first released: no Retry-After pauses; `+pauses` honours them."""
    base: Literal["static", "streak", "adaptive"] = "adaptive"
    if policy in ("streak-v1", "streak-v1+pauses"):
        base = "streak"
    elif policy == "static":
        base = "static"
    return LearningSettings(
        policy=base,
        honour_retry_after=policy != "streak-v1",
        learning=True,
        recovery=True,
        pacing=scenario.pacing,
        allow_above_configured=scenario.pacing,
    )


def _clients(policy: PolicyName, scenario: Scenario) -> list[ClientSide]:
    if policy == "botocore":
        # botocore learns inside each process: one limiter per process, as it would run.
        clock = VirtualClock()
        return [BotoClient(clock) for _ in range(scenario.workload.processes)]
    burst = max(1.0, scenario.configured * 0.1)
    settings = settings_for(policy, scenario)
    if policy == "streak-v1+pauses":
        # The first release's pause: wait out Retry-After, then send the burst stored meanwhile.
        return [DaemonClient(settings, scenario.configured, scenario.configured, hold=False)]
    return [DaemonClient(settings, scenario.configured, burst)]


def settle_times(outcome: Outcome, provider: HiddenProvider) -> tuple[float | None, ...]:
    """Seconds from each capacity change until goodput stays within 10% of capacity.

    The goodput measure: the 10 s mean of successes per second, judged every second.
    """
    bins = outcome.success_bins
    changes = [*provider.change_times(), outcome.duration]
    result: list[float | None] = []
    for start, stop in itertools.pairwise(changes):
        first = int(start)
        settled_at: int | None = None
        for second in range(int(stop) - 1, first - 1, -1):
            lo = max(first, second - _SETTLE_WINDOW + 1)
            mean = sum(bins[lo : second + 1]) / (second + 1 - lo)
            capacity = provider.capacity(second + 0.5)
            if abs(mean - capacity) > 0.1 * capacity:
                break
            settled_at = second
        result.append(None if settled_at is None else float(settled_at + 1 - first))
    return tuple(result)


def settle_rate_times(outcome: Outcome, provider: HiddenProvider) -> tuple[float | None, ...]:
    """Seconds from each capacity change until the learned rate stays within 10% of capacity.

    Measured on the controlled variable: the rate the limiter enforces (the learner's factor ×
    configured; botocore's current send rate), sampled every 0.5 s as for the PNG. Samples taken
    while a Retry-After pause holds the bucket are skipped: a pause is not a rate change. Settled
    at the first sample from which every later one up to the next change is within the band.
    """
    changes = [*provider.change_times(), outcome.duration]
    result: list[float | None] = []
    for start, stop in itertools.pairwise(changes):
        samples = [(t, r) for t, r in outcome.rate_trace if start <= t < stop and r is not None]
        settled_at: float | None = None
        for t, rate in reversed(samples):
            capacity = provider.capacity(t)
            if not abs(rate - capacity) <= 0.1 * capacity:  # also catches inf (unlimited)
                break
            settled_at = t
        result.append(None if settled_at is None else settled_at - start)
    return tuple(result)


def run_scenario(
    scenario: Scenario, policy: PolicyName, *, seed: int = 1, duration: float | None = None
) -> Row:
    """Simulate one scenario under one policy."""
    rng = random.Random(f"{seed}:{scenario.name}:{policy}")
    workload = scenario.workload
    if duration is not None:
        workload = replace(workload, duration=duration)
    provider = HiddenProvider(
        scenario.steps, rng, burst_seconds=scenario.provider_burst, noise=scenario.noise,
        headers=scenario.headers, charge_rejected=scenario.charge_rejected,
        noise_retry_after=scenario.noise_retry_after, hiccups=scenario.hiccups,
    )  # fmt: skip
    outcome = simulate(provider, _clients(policy, scenario), workload, rng)
    waits = sorted(outcome.extra_waits) or [0.0]
    return Row(
        scenario=scenario.name,
        policy=policy,
        goodput=outcome.successes / outcome.capacity_total,
        limited_share=outcome.limited / max(1, outcome.attempts),
        settle=settle_times(outcome, provider),
        settle_rate=settle_rate_times(outcome, provider),
        wait_p50=statistics.median(waits),
        wait_p99=waits[min(len(waits) - 1, math.ceil(0.99 * len(waits)) - 1)],
        backlog=outcome.backlog,
        outcome=outcome,
    )


def run(
    scenarios: Sequence[Scenario] = SCENARIOS,
    policies: Sequence[PolicyName] = POLICIES,
    *,
    seed: int = 1,
    duration: float | None = None,
) -> list[Row]:
    return [run_scenario(s, p, seed=seed, duration=duration) for s in scenarios for p in policies]


def format_table(rows: Sequence[Row]) -> str:
    header = (
        "| scenario | policy | goodput | 429 share | settle goodput (s) | settle rate (s) "
        "| wait p50 (s) | wait p99 (s) | backlog |\n"
        "| --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: |"
    )
    lines = [header]
    for r in rows:
        settle = " / ".join("never" if s is None else f"{s:.0f}" for s in r.settle)
        rate = " / ".join("never" if s is None else f"{s:.1f}" for s in r.settle_rate)
        lines.append(
            f"| {r.scenario} | {r.policy} | {r.goodput:.2f} | {r.limited_share:.2%} | {settle} "
            f"| {rate} | {r.wait_p50:.2f} | {r.wait_p99:.2f} | {r.backlog} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Row], out_dir: Path = OUT_DIR) -> list[Path]:
    """One PNG per scenario: allowed rate of each policy against the hidden capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for scenario in SCENARIOS:
        mine = [r for r in rows if r.scenario == scenario.name]
        if not mine:
            continue
        fig, ax = plt.subplots(figsize=(9, 4))
        trace = mine[0].outcome.trace
        ax.plot([t for t, _, _ in trace], [c for _, _, c in trace], "k-", lw=2, label="hidden")
        for r in mine:
            ts = [t for t, _, _ in r.outcome.trace]
            allowed = [a if math.isfinite(a) else float("nan") for _, a, _ in r.outcome.trace]
            ax.plot(ts, allowed, lw=0.8, label=f"{r.policy} ({r.goodput:.2f})")
        ax.set_title(f"({scenario.name}) {scenario.title}")
        ax.set_xlabel("virtual seconds")
        ax.set_ylabel("allowed requests/s")
        ax.set_ylim(0, max(scenario.configured, max(c for _, c in scenario.steps)) * 1.3)
        ax.legend(loc="upper right", fontsize=7)
        path = out_dir / f"learning_{scenario.name.replace('+', '_')}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def quick(seed: int = 1) -> list[Row]:
    """The rows the test suite checks: adaptive everywhere, streak-v1 and botocore in (a)."""
    by_name = {s.name: s for s in SCENARIOS}
    rows = run([by_name["a"]], ("streak-v1", "adaptive", "botocore"), seed=seed)
    rest = [s for s in SCENARIOS if s.name != "a"]
    return rows + run(rest, ("adaptive",), seed=seed)


def _quick_rows(seed: int) -> list[Row]:
    return [replace(r, outcome=Outcome(0.0, 0.0)) for r in quick(seed)]  # lighter to pickle


def _compare_rows(seed: int) -> list[Row]:
    rows = run(SCENARIOS, ("adaptive", "static", "botocore"), seed=seed)
    rows += run([SCENARIOS[0]], ("streak-v1",), seed=seed)
    return [replace(r, outcome=Outcome(0.0, 0.0)) for r in rows]


def rows_by_seed(
    seeds: Sequence[int], *, botocore_everywhere: bool = False, processes: int | None = None
) -> dict[int, dict[tuple[str, str], Row]]:
    """`quick` rows (or adaptive and botocore in every scenario) for each seed, in parallel."""
    job = _compare_rows if botocore_everywhere else _quick_rows
    workers = max(1, min(len(seeds), processes or os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(job, seeds))
    return {
        seed: {(r.scenario, r.policy): r for r in rows} for seed, rows in zip(seeds, results, strict=True)
    }


NOISE_SCENARIOS = ("c+ra3", "c+ra20", "c+hiccup", "b+ra")  # target: 95 % of what the noise leaves


def issue_targets(rows: dict[tuple[str, str], Row]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for `adaptive` against the targets (docs/benchmarks.md), one seed.

    "Settled" within 10 % of the new capacity, on both measures: goodput (10 s means of
    successes) and the rate the limiter enforces.
    """

    def ad(name: str) -> Row:
        return rows[name, "adaptive"]

    a, b, c, cra, d, dh, e, f = (ad(n) for n in ("a", "b", "c", "c+ra", "d", "d+h", "e", "f"))
    drop = (b.settle[1], b.settle_rate[1])
    back = (b.settle[2], b.settle_rate[2])

    def secs(pair: tuple[float | None, ...]) -> str:
        return "/".join("never" if x is None else f"{x:.0f}" for x in pair)

    def within(pair: tuple[float | None, ...], limit: float) -> bool:
        return all(x is not None and x <= limit for x in pair)

    by_name = {s.name: s for s in SCENARIOS}
    noisy = []
    for name in NOISE_SCENARIOS:
        row, want = ad(name), 0.95 * (1.0 - by_name[name].noise_share)
        noisy.append((f"{name} >= {want:.2f}", f"{row.goodput:.3f}", row.goodput >= want))
    return [
        ("a >= 0.95, <= 1% 429s", f"{a.goodput:.3f} {a.limited_share:.2%}",
         a.goodput >= 0.95 and a.limited_share <= 0.01),
        ("b >= 0.95", f"{b.goodput:.3f}", b.goodput >= 0.95),
        ("b <= 20 s after the drop", secs(drop), within(drop, 20)),
        ("b <= 60 s after the return", secs(back), within(back, 60)),
        ("c >= 0.85", f"{c.goodput:.3f}", c.goodput >= 0.85),
        ("c+ra >= 0.85", f"{cra.goodput:.3f}", cra.goodput >= 0.85),
        *noisy,
        ("d = configured", f"{d.goodput:.3f}", abs(d.goodput - 30 / 50) <= 0.01),
        ("d+h >= 0.95", f"{dh.goodput:.3f}", dh.goodput >= 0.95),
        ("e <= 1% 429s", f"{e.limited_share:.2%}", e.limited_share <= 0.01),
        ("f no backlog (<= 40)", f"{f.backlog}", f.backlog <= 40),
    ]  # fmt: skip


def format_seeds(by_seed: dict[int, dict[tuple[str, str], Row]]) -> str:
    """One line per seed: every target's measured value, `!` marking a missed one."""
    names = [t for t, _, _ in issue_targets(next(iter(by_seed.values())))]
    lines = [
        "| seed | " + " | ".join(names) + " | missed |",
        "| ---: |" + " --- |" * (len(names) + 1),
    ]
    for seed, rows in by_seed.items():
        checks = issue_targets(rows)
        cells = [value + ("" if met else " !") for _, value, met in checks]
        missed = [t.split(" ")[0] for t, _, met in checks if not met]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {', '.join(missed) or '-'} |")
    if any(("c", "botocore") in rows for rows in by_seed.values()):
        lines += ["", format_comparison(by_seed)]
    return "\n".join(lines)


def format_comparison(by_seed: dict[int, dict[tuple[str, str], Row]]) -> str:
    """Goodput and 429 share of adaptive, static and botocore per scenario: mean, min and max."""
    lines = [
        f"seeds {_seed_list(list(by_seed))}: goodput mean (min-max), 429 share mean",
        "",
        "| scenario | adaptive | static | botocore | adaptive 429s | static 429s | botocore 429s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in SCENARIOS:
        cells, shares = [], []
        for policy in ("adaptive", "static", "botocore"):
            rows = [r[scenario.name, policy] for r in by_seed.values() if (scenario.name, policy) in r]
            if not rows:
                cells.append("-")
                shares.append("-")
                continue
            good = [r.goodput for r in rows]
            cells.append(f"{statistics.mean(good):.3f} ({min(good):.3f}-{max(good):.3f})")
            shares.append(f"{statistics.mean(r.limited_share for r in rows):.2%}")
        lines.append(f"| {scenario.name} | " + " | ".join(cells + shares) + " |")
    return "\n".join(lines)


def _seed_list(seeds: list[int]) -> str:
    return ",".join(map(str, seeds)) if len(seeds) < 4 else f"{min(seeds)}-{max(seeds)} ({len(seeds)})"


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += range(int(lo), int(hi or lo) + 1)
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.learning", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only the rows the test suite checks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--seeds", type=_parse_seeds, metavar="LIST",
        help="e.g. 1-12 or 1,3,5: per-seed summary of adaptive against the targets (docs/benchmarks.md) "
        "(and adaptive vs botocore in every scenario) instead of the table",
    )  # fmt: skip
    parser.add_argument(
        "--provider-burst", type=float, metavar="SECONDS",
        help="the hidden provider's bucket, in seconds of its rate (default 0.25; robustness runs)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    scenarios: Sequence[Scenario] = SCENARIOS
    if args.provider_burst is not None:
        scenarios = [replace(s, provider_burst=args.provider_burst) for s in SCENARIOS]
    if args.seeds:
        print(format_seeds(rows_by_seed(args.seeds, botocore_everywhere=True)))
        print(f"({time.perf_counter() - started:.1f} s of real time)")
        return 0
    rows = quick(args.seed) if args.quick else run(scenarios, seed=args.seed)
    print(format_table(rows))
    if not args.no_plots and not args.quick:
        for path in plot(rows):
            print(f"wrote {path}")
    print(f"({time.perf_counter() - started:.1f} s of real time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
