"""Cost of one uncontended permit in the limiter core vs aiolimiter, in one process.

Measures what the daemon adds per acquire before any I/O: our pure GCRA
`BucketLimiter.try_take` (one unit and two units), aiolimiter's
`AsyncLimiter.acquire()` on a loop, and an empty coroutine as the floor.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiolimiter import AsyncLimiter

from ratelimitd.core.limiter import BucketLimiter, LimitSpec

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("main", "measure")

N = 200_000


def _per_call(run: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / n * 1e6


def measure(n: int = N) -> dict[str, float]:
    """Microseconds per call for each contender (best of 3 runs)."""
    huge = 1e12  # never limits: we time the bookkeeping, not the waiting

    def gcra_one() -> None:
        limiter = BucketLimiter({"requests": LimitSpec(huge, huge)}, 0.0)
        cost = {"requests": 1.0}
        now = time.monotonic
        for _ in range(n):
            limiter.try_take(cost, now())

    def gcra_two() -> None:
        limiter = BucketLimiter({"requests": LimitSpec(huge, huge), "tokens": LimitSpec(huge, huge)}, 0.0)
        cost = {"requests": 1.0, "tokens": 1200.0}
        now = time.monotonic
        for _ in range(n):
            limiter.try_take(cost, now())

    async def aio() -> None:
        limiter = AsyncLimiter(huge, 1)
        for _ in range(n):
            await limiter.acquire()

    async def empty() -> None:
        async def nothing() -> None:
            return None

        for _ in range(n):
            await nothing()

    results: dict[str, float] = {}
    for name, run in (
        ("empty coroutine (floor)", lambda: asyncio.run(empty())),
        ("ratelimitd GCRA, 1 unit", gcra_one),
        ("ratelimitd GCRA, 2 units", gcra_two),
        ("aiolimiter AsyncLimiter.acquire", lambda: asyncio.run(aio())),
    ):
        results[name] = min(_per_call(run, n) for _ in range(3))
    return results


def main(quick: bool = False) -> None:
    results = measure(20_000 if quick else N)
    print("\n## limiter core: µs per uncontended permit (best of 3, same run)")
    print(f"{'contender':<36} {'µs/permit':>10}")
    for name, micros in results.items():
        print(f"{name:<36} {micros:>10.3f}")


if __name__ == "__main__":
    main()
