"""A long run of many client processes: the daemon's RSS, open fds and p99 at start and end.

16 processes (the real `AsyncClient`, one connection each) acquire and report in a loop
against one `ratelimitd serve` with HTTP and metrics on; every 500th iteration a process
reconnects and asks a `status` (connection churn, the largest answer). The daemon's VmRSS
and open file descriptors are read after a warm-up and at the end, with each window's
acquire p50/p99 (the first and last tenth of the run): a leak shows as growth between
the two rows in the same run.

    python -m bench.soak [--duration S] [--processes N]     # default 180 s, 16 processes
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import TYPE_CHECKING

from bench.throughput import daemon, rss_mib, socket_of
from ratelimitd.client import AsyncClient

if TYPE_CHECKING:
    from collections.abc import Sequence
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

__all__ = ("main",)

PROVIDERS = [f"soak{i}" for i in range(8)]
CONFIG = "[server]\nlog_level = 'warning'\n" + "".join(
    f'[providers.{name}]\nrate = "1000000/second"\nburst = 1000000\n' for name in PROVIDERS
)
WARM_UP = 3.0


def _worker(
    path: str, index: int, duration: float, barrier: Barrier, results: Queue[tuple[int, int, bytes, bytes]]
) -> None:
    provider = PROVIDERS[index % len(PROVIDERS)]

    async def run() -> None:
        client = AsyncClient(path)
        await client.acquire(provider)
        barrier.wait()
        clock = time.perf_counter
        started = clock()
        window = duration / 10
        first, last = array("d"), array("d")
        count = errors = 0
        deadline = started + duration
        now = started
        try:
            while now < deadline:
                begun = now
                try:
                    permit = await client.acquire(provider)
                    await client.report(provider, 200, bucket=permit.bucket, permit=permit.permit)
                except Exception:  # counted: the soak must show none
                    errors += 1
                now = clock()
                count += 1
                if now - started < window:
                    first.append(now - begun)
                elif deadline - now < window:
                    last.append(now - begun)
                if count % 500 == 0:
                    await client.status(provider)
                    await client.aclose()
                    client = AsyncClient(path)
        finally:
            await client.aclose()
        results.put((count, errors, first.tobytes(), last.tobytes()))

    asyncio.run(run())


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _percentiles(raw: array[float]) -> tuple[float, float]:
    ordered = sorted(raw)
    if not ordered:
        return 0.0, 0.0
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def soak(duration: float, processes: int) -> list[str]:
    directory = Path(tempfile.mkdtemp(prefix="rl-soak-"))
    try:
        with daemon(directory, metrics=True, config=CONFIG, name="soak") as served:
            path = str(socket_of(served))
            context = multiprocessing.get_context("fork")
            barrier = context.Barrier(processes + 1)
            results: Queue[tuple[int, int, bytes, bytes]] = context.Queue()
            workers = [
                context.Process(target=_worker, args=(path, i, duration, barrier, results))
                for i in range(processes)
            ]
            for worker in workers:
                worker.start()
            barrier.wait(timeout=120)
            time.sleep(min(WARM_UP, duration / 10))
            start = (rss_mib(served.pid), _fds(served.pid))
            samples: list[tuple[float, float, int]] = []
            stop = threading.Event()

            def sample() -> None:
                begun = time.monotonic()
                while not stop.wait(max(1.0, duration / 6)):
                    samples.append((time.monotonic() - begun, rss_mib(served.pid), _fds(served.pid)))

            sampler = threading.Thread(target=sample)
            sampler.start()
            first, last = array("d"), array("d")
            total = errors = 0
            for _ in workers:
                count, failed, head, tail = results.get(timeout=duration + 120)
                total += count
                errors += failed
                first.frombytes(head)
                last.frombytes(tail)
            end = (rss_mib(served.pid), _fds(served.pid))
            stop.set()
            sampler.join()
            for worker in workers:
                worker.join(timeout=10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    p50_start, p99_start = _percentiles(first)
    p50_end, p99_end = _percentiles(last)
    out = [
        f"## soak: {processes} processes, {duration:g} s: acquire + report, reconnect + status every 500",
        f"{total:,} acquires ({total / duration:,.0f}/s), {errors} errors",
        f"{'':>6} {'RSS MiB':>8} {'fds':>5} {'p50 µs':>8} {'p99 µs':>8}",
        f"{'start':>6} {start[0]:>8.1f} {start[1]:>5} {p50_start * 1e6:>8,.0f} {p99_start * 1e6:>8,.0f}",
        f"{'end':>6} {end[0]:>8.1f} {end[1]:>5} {p50_end * 1e6:>8,.0f} {p99_end * 1e6:>8,.0f}",
        "samples (s, RSS MiB, fds): "
        + ", ".join(f"({at:.0f}, {rss:.1f}, {fds})" for at, rss, fds in samples),
    ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--processes", type=int, default=16, help="client processes (default 16)")
    parser.add_argument("--quick", action="store_true", help="20 s instead of the default")
    args = parser.parse_args(argv)
    duration = 20.0 if args.quick else args.duration
    for line in soak(duration, args.processes):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
