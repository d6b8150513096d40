"""Acquire throughput of the real daemon with metrics on and off (target: at most a 10% drop).

Starts `ratelimitd serve` twice per round, once with HTTP and metrics (`--http-port 0`)
and once with `--no-http` (the service keeps its no-op hooks), alternating so
machine noise hits both alike. Each run pipelines acquires of a provider with a
rate too high to ever wait, over one connection, in batches; a scrape of /metrics
every 100 ms during the metrics-on runs (from a separate process) keeps the
collector honest. Reports the
best and median throughput of each mode and the drop.

    python -m bench.metrics_overhead [--rounds 5] [--acquires 100000]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("main", "measure")

CONFIG = """
[server]
socket = "{socket}"
log_level = "info"

[providers.bench]
rate = "1000000000/second"
burst = 1000000000
"""
BATCH = 500
LINE = b'{"op":"acquire","provider":"bench","timeout":0}\n'


def _wait(what: str, check: Callable[[], bool], bound: float = 20.0) -> None:
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


# The scraper runs in its own process: a thread in this process would take the GIL from
# the client's read loop and charge the client's slowdown to the daemon's metrics.
_SCRAPER = """
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/metrics"
while True:
    with urllib.request.urlopen(url, timeout=5) as response:
        response.read()
    time.sleep(0.1)
"""


def _start_scraper(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _SCRAPER, str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )


def run_once(metrics: bool, acquires: int) -> float:
    """Acquires per second through one pipelined connection to a fresh daemon."""
    directory = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    sock_path = directory / "s.sock"
    log = directory / "daemon.log"
    (directory / "c.toml").write_text(CONFIG.format(socket=sock_path))
    args = [sys.executable, "-m", "ratelimitd", "serve", "--config", str(directory / "c.toml")]
    args += ["--http-port", "0"] if metrics else ["--no-http"]
    with log.open("wb") as out:
        daemon = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    scraper: subprocess.Popen[bytes] | None = None
    try:
        _wait("the socket", sock_path.exists)
        if metrics:
            found: list[int] = []

            def bound() -> bool:
                match = re.search(r"on 127\.0\.0\.1:(\d+)", log.read_text())
                if match:
                    found.append(int(match.group(1)))
                return bool(match)

            _wait("the HTTP port", bound)
            scraper = _start_scraper(found[0])
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(sock_path))
        reader = client.makefile("rb")
        client.sendall(LINE * BATCH)  # warm-up
        for _ in range(BATCH):
            reader.readline()
        start = time.perf_counter()
        last = b""
        for _ in range(acquires // BATCH):
            client.sendall(LINE * BATCH)
            for _ in range(BATCH):
                last = reader.readline()
        elapsed = time.perf_counter() - start
        if b'"ok":true' not in last:
            raise RuntimeError(f"unexpected answer {last!r}")
        client.close()
        return (acquires // BATCH * BATCH) / elapsed
    finally:
        if scraper is not None:
            scraper.kill()
            scraper.wait(timeout=10)
        daemon.terminate()
        daemon.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def measure(rounds: int, acquires: int) -> dict[str, list[float]]:
    """Throughputs per mode, alternating modes each round."""
    results: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        results["off"].append(run_once(False, acquires))
        results["on"].append(run_once(True, acquires))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--acquires", type=int, default=100_000)
    args = parser.parse_args(argv)
    results = measure(args.rounds, args.acquires)
    print("metrics overhead: pipelined acquires/s over one connection")
    print(f"{'metrics':<8} {'best':>10} {'median':>10}")
    for mode, values in results.items():
        print(f"{mode:<8} {max(values):>10,.0f} {statistics.median(values):>10,.0f}")
    best = 1 - max(results["on"]) / max(results["off"])
    median = 1 - statistics.median(results["on"]) / statistics.median(results["off"])
    print(f"drop with metrics on: {best:.1%} (best), {median:.1%} (median); target <= 10%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
