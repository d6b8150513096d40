"""Learning across hosts, in real time: 4 daemons on one Redis against 4 daemons alone.

The shape of the learning bench's scenario e: a provider whose hidden capacity (50/s, a
bucket of a quarter second) is half the configured rate (100/s), 8 client processes of 4
workers each in a closed loop, half of them echoing their permits in reports. Here the 8
processes are spread over 4 real daemons (2 each) with learning and recovery on, and time
is real (a short run, so the first convergence weighs in). Measured: the share of calls
answered 429 and the successes as a share of the hidden capacity, for one daemon serving
all 8 processes (the target: sharing should learn as well as one daemon), the 4 daemons
sharing one bucket through Redis, and 4 daemons each learning alone.

    python -m bench.redis_learning [--quick] [--duration S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from bench.redis_backend import daemons, redis_server

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("main",)

HIDDEN = 50.0
PROVIDER_BURST = 0.25  # seconds of the hidden rate
CONFIGURED = 'rate = "100/second"\nburst = 10'
HOSTS = 4
PROCESSES = 8
WORKERS = 4


class HiddenProvider:
    """The provider's own token bucket: 200 when a token is there, else 429."""

    def __init__(self, rate: float, burst_seconds: float) -> None:
        self.rate = rate
        self.burst = rate * burst_seconds
        self.tokens = self.burst
        self.at = time.monotonic()

    def call(self) -> int:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 200
        return 429


@dataclass(slots=True)
class Tally:
    attempts: int = 0
    successes: int = 0
    limited: int = 0


async def _worker(path: str, provider: HiddenProvider, echo: bool, deadline: float, tally: Tally) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        while time.monotonic() < deadline:
            writer.write(b'{"op":"acquire","provider":"api","timeout":5}\n')
            answer = orjson.loads(await reader.readline())
            if not answer.get("ok"):
                continue
            if time.monotonic() >= deadline:
                break  # granted after the end: not counted
            status = provider.call()
            tally.attempts += 1
            if status == 200:
                tally.successes += 1
            else:
                tally.limited += 1
            report: dict[str, object] = {"op": "report", "provider": "api", "status": status}
            if echo:
                report["permit"] = answer.get("permit")
            writer.write(orjson.dumps(report) + b"\n")
            await reader.readline()
    finally:
        writer.close()


async def _fleet(paths: list[str], seconds: float) -> Tally:
    provider = HiddenProvider(HIDDEN, PROVIDER_BURST)
    tally = Tally()
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(
            _worker(paths[process % len(paths)], provider, process % 2 == 0, deadline, tally)
            for process in range(PROCESSES)
            for _ in range(WORKERS)
        )
    )
    return tally


def run(seconds: float) -> list[tuple[str, Tally]]:
    rows = []
    learning = "[features]\nlearning = true\nrecovery = true\n"
    with tempfile.TemporaryDirectory(prefix="rll-") as tmp:
        directory = Path(tmp)
        with redis_server(directory) as url:
            fleets = (
                ("1 daemon, all 8 processes", "", 1),
                (f"{HOSTS} daemons on one Redis", url, HOSTS),
                (f"{HOSTS} daemons alone (memory)", "", HOSTS),
            )
            for name, backend, hosts in fleets:
                limit = f"{CONFIGURED}\n\n{learning}"
                with daemons(
                    directory, hosts, backend, limit, f"{name[:1]}{'s' if backend else 'm'}"
                ) as paths:
                    rows.append((name, asyncio.run(_fleet(paths, seconds))))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_learning", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s per row")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per row (default 60)")
    args = parser.parse_args(argv)
    seconds = 10.0 if args.quick else args.duration
    rows = run(seconds)
    print(
        f"\nlearning across hosts: hidden {HIDDEN:g}/s, configured 100/s, {PROCESSES} processes x "
        f"{WORKERS} workers over {HOSTS} daemons, {seconds:g} s real time"
    )
    print("| fleet | calls | 429s | 429 share | successes / capacity |")
    print("| --- | --- | --- | --- | --- |")
    for name, tally in rows:
        share = tally.limited / tally.attempts if tally.attempts else 0.0
        print(
            f"| {name} | {tally.attempts:,} | {tally.limited:,} | {share:.1%} | "
            f"{tally.successes / (HIDDEN * seconds):.3f} |"
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
