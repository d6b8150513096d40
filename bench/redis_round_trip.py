"""How long one Redis call of the backend takes on a loaded host: the basis of `timeout`'s default.

One redis-server on loopback TCP; one asyncio process (redis-py, the backend's client) runs the
lease script (`TAKE`) by EVALSHA every 5 ms, as a busy host refills leases, while its own loop
also does 0.5 ms slices of other work (a daemon serving acquires). Two rows in the same run:
`idle` (nothing else), and `2/core` and `4/core` (that many busy
processes per core beside it: a load average of 2x and 4x the cores). Prints the
percentiles and how many calls a given `timeout` would have counted as Redis being down.

    python -m bench.redis_round_trip [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

__all__ = ("main",)

TIMEOUTS = (0.1, 0.25, 0.5, 1.0)


def _spin(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        sum(range(1000))


async def _measure(port: int, seconds: float) -> list[float]:
    import redis.asyncio as redis

    from ratelimitd.backends.scripts import TAKE

    client = redis.Redis(host="127.0.0.1", port=port)
    sha = await client.script_load(TAKE)
    stop = time.monotonic() + seconds

    async def busy() -> None:
        while time.monotonic() < stop:
            slice_end = time.perf_counter() + 0.0005
            while time.perf_counter() < slice_end:
                pass
            await asyncio.sleep(0)

    worker = asyncio.create_task(busy())
    took: list[float] = []
    while time.monotonic() < stop:
        start = time.perf_counter()
        await client.evalsha(sha, 1, "{b:x}:gcra", 1, "requests", 100.0, 20, 1, 5)
        took.append(time.perf_counter() - start)
        await asyncio.sleep(0.005)
    await worker
    await client.aclose()
    return took


def _row(name: str, took: list[float]) -> str:
    took = sorted(took)

    def q(p: float) -> float:
        return took[min(len(took) - 1, int(p * len(took)))] * 1000

    over = "  ".join(f"{sum(t > limit for t in took):>6}" for limit in TIMEOUTS)
    return (
        f"{name:<8}{len(took):>7}{q(0.5):>9.2f}{q(0.99):>9.2f}{q(0.999):>9.2f}{took[-1] * 1000:>9.1f}  {over}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server not installed: skipped", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as work:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", work],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                if (
                    subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode
                    == 0
                ):
                    break
                time.sleep(0.02)
            idle = asyncio.run(_measure(port, args.seconds))
            rows = [("idle", idle)]
            for per_core in (2, 4):
                hogs = [
                    multiprocessing.Process(target=_spin, args=(time.monotonic() + args.seconds + 1,))
                    for _ in range(per_core * (os.cpu_count() or 1))
                ]
                for hog in hogs:
                    hog.start()
                rows.append((f"{per_core}/core", asyncio.run(_measure(port, args.seconds))))
                for hog in hogs:
                    hog.join()
        finally:
            server.terminate()
            server.wait()
    print(f"Redis call (EVALSHA of the lease script) on loopback, {os.cpu_count()} cores, ms")
    head = "  ".join(f">{t:g}s".rjust(6) for t in TIMEOUTS)
    print(f"{'load':<8}{'calls':>7}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>9}  {head}")
    for name, took in rows:
        print(_row(name, took))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
