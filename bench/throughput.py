"""Acquire throughput and latency of the real daemon beside a bare NDJSON echo server.

Started in the same run: `bench.echo_server` (the baseline: same framing, one orjson
decode and encode per line) and `ratelimitd serve` with one provider whose rate
never makes anyone wait. Measured:

1. Client processes: 1, 16 and 64 processes, each one `AsyncClient` (the real
   client, default asyncio loop) doing one acquire at a time for a fixed time;
   acquires per second and p50/p99 latency, daemon against echo.
2. Server capacity: N acquires pipelined over one raw connection (a sender thread
   writes, the reader only counts lines), so the time is the server's; the
   difference with echo, per acquire, is the daemon's own cost. With metrics and
   HTTP on (the default configuration) and off (`--no-http`).
3. Memory: the daemon's VmRSS with 1 provider and with 1,000 providers
   configured, then after one acquire on each of the 1,000.

    python -m bench.throughput [--quick] [--duration S] [--acquires N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ratelimitd.client import AsyncClient

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

__all__ = ("ClientRow", "PipelineRow", "main", "run")

PROVIDER = "bench"
CONFIG = f"""
[server]
log_level = "warning"

[providers.{PROVIDER}]
rate = "1000000000/second"
burst = 1000000000
"""
STARTUP_BOUND = 20.0


# -- servers ------------------------------------------------------------------------------------


def _answers_ping(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
            sock.sendall(b'{"op":"ping","id":0}\n')
            return sock.recv(4096).endswith(b"\n")
        except OSError:
            return False


@contextlib.contextmanager
def _server(
    argv: list[str], path: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process until its socket answers a ping; SIGTERM it on exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + STARTUP_BOUND
        while not _answers_ping(path):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[2:4]} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.02)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def echo_server(directory: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    path = directory / "echo.sock"
    argv = [sys.executable, "-m", "bench.echo_server", "--socket", str(path)]
    return _server(argv, path, directory / "echo.log")


def daemon(
    directory: Path,
    *,
    metrics: bool,
    config: str = CONFIG,
    name: str = "daemon",
    env: dict[str, str] | None = None,
    http_port: int = 0,
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    path = directory / f"{name}.sock"
    config_path = directory / f"{name}.toml"
    config_path.write_text(config, "utf-8")
    # -P: `ratelimitd` from the installed package or `PYTHONPATH` (a compiled tree), never
    # from the working directory.
    argv = [sys.executable, "-P", "-m", "ratelimitd", "serve", "--socket", str(path)]
    argv += ["--config", str(config_path)]
    argv += ["--http-port", str(http_port)] if metrics else ["--no-http"]
    return _server(argv, path, directory / f"{name}.log", env)


def socket_of(process: subprocess.Popen[bytes]) -> Path:
    args = [str(a) for a in process.args]  # type: ignore[union-attr]
    return Path(args[args.index("--socket") + 1])


# -- client processes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientRow:
    server: str
    processes: int
    acquires: int
    seconds: float
    p50: float  # seconds
    p99: float

    @property
    def per_second(self) -> float:
        return self.acquires / self.seconds


def _worker(path: str, duration: float, barrier: Barrier, results: Queue[tuple[int, bytes]]) -> None:
    async def run() -> None:
        async with AsyncClient(path) as client:
            for _ in range(20):  # warm up the connection and the code paths
                await client.acquire(PROVIDER)
            barrier.wait()  # everyone connected: start together
            latencies = array("d")
            clock = time.perf_counter
            deadline = clock() + duration
            now = clock()
            while now < deadline:
                started = now
                await client.acquire(PROVIDER)
                now = clock()
                latencies.append(now - started)
        results.put((len(latencies), latencies.tobytes()))

    asyncio.run(run())


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def client_processes(server: str, path: Path, processes: int, duration: float) -> ClientRow:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes + 1)
    results: Queue[tuple[int, bytes]] = context.Queue()
    workers = [
        context.Process(target=_worker, args=(str(path), duration, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=60)
    started = time.perf_counter()
    latencies = array("d")
    total = 0
    for _ in workers:
        count, raw = results.get(timeout=60 + duration)
        total += count
        latencies.frombytes(raw)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join(timeout=10)
    ordered = sorted(latencies)
    # Every worker stops at its own deadline, so the wall time is the duration.
    seconds = min(elapsed, duration) if elapsed > 0 else duration
    return ClientRow(server, processes, total, seconds, _percentile(ordered, 0.5), _percentile(ordered, 0.99))


# -- pipelined capacity -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PipelineRow:
    server: str
    acquires: int
    seconds: float  # best of the repetitions
    errors: int

    @property
    def micros_per_acquire(self) -> float:
        return self.seconds / self.acquires * 1e6


def _pipeline_once(path: Path, chunks: list[bytes], expected: int) -> tuple[float, int]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))

        def send() -> None:
            for chunk in chunks:
                sock.sendall(chunk)

        sender = threading.Thread(target=send)
        started = time.perf_counter()
        sender.start()
        seen = errors = 0
        while seen < expected:
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError("the server closed the connection")
            seen += data.count(b"\n")
            errors += data.count(b'"ok":false')
        elapsed = time.perf_counter() - started
        sender.join()
    return elapsed, errors


def pipelined(server: str, path: Path, acquires: int, repetitions: int) -> PipelineRow:
    lines = [orjson.dumps({"op": "acquire", "provider": PROVIDER, "id": i}) + b"\n" for i in range(acquires)]
    return pipelined_lines(server, path, lines, repetitions)


def pipelined_lines(server: str, path: Path, lines: list[bytes], repetitions: int) -> PipelineRow:
    """`lines` (each ending in a newline) sent over one connection; the best of `repetitions`."""
    count = len(lines)
    chunks = [b"".join(lines[i : i + 256]) for i in range(0, count, 256)]
    _pipeline_once(path, chunks[:20], min(count, 20 * 256))  # warm-up
    best, errors = min(_pipeline_once(path, chunks, count) for _ in range(repetitions))
    return PipelineRow(server, count, best, errors)


# -- memory -------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """VmRSS of a process, in MiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def many_providers_config(count: int) -> str:
    lines = [f"[server]\nmax_providers = {count}\nlog_level = 'warning'\n"]
    lines += [f'[providers.p{i:04d}]\nrate = "60/minute"\nburst = 10\n' for i in range(count)]
    return "\n".join(lines)


def memory(directory: Path, count: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with daemon(directory, metrics=True, name="mem1") as process:
        out["1 provider, idle"] = rss_mib(process.pid)
    config = many_providers_config(count)
    with daemon(directory, metrics=True, config=config, name="memN") as process:
        out[f"{count} providers configured, idle"] = rss_mib(process.pid)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(socket_of(process)))
            body = b"".join(
                orjson.dumps({"op": "acquire", "provider": f"p{i:04d}", "id": i}) + b"\n"
                for i in range(count)
            )
            sock.sendall(body)
            seen = 0
            while seen < count:
                seen += sock.recv(1 << 20).count(b"\n")
            sock.sendall(b'{"op":"status","id":"s"}\n')  # the largest answer it builds
            data = b""
            while not data.endswith(b"\n"):
                data += sock.recv(1 << 20)
        out[f"{count} providers, one acquire each + status"] = rss_mib(process.pid)
    with daemon(directory, metrics=False, config=config, name="memN-plain") as process:
        out[f"{count} providers configured, --no-http, idle"] = rss_mib(process.pid)
    return out


# -- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Results:
    clients: list[tuple[ClientRow, ClientRow]]  # (echo, daemon) per level
    pipeline: list[PipelineRow]
    memory: dict[str, float]


def run(
    *, levels: Sequence[int], duration: float, acquires: int, repetitions: int, providers: int
) -> Results:
    directory = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    try:
        with echo_server(directory) as echo, daemon(directory, metrics=True) as served:
            echo_path, daemon_path = socket_of(echo), socket_of(served)
            pipeline = [
                pipelined("echo", echo_path, acquires, repetitions),
                pipelined("daemon (metrics+http on)", daemon_path, acquires, repetitions),
            ]
            clients = [
                (
                    client_processes("echo", echo_path, n, duration),
                    client_processes("daemon", daemon_path, n, duration),
                )
                for n in levels
            ]
        with daemon(directory, metrics=False, name="plain") as plain:
            pipeline.append(pipelined("daemon (--no-http)", socket_of(plain), acquires, repetitions))
        return Results(clients, pipeline, memory(directory, providers))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def format_results(results: Results, providers: int) -> str:
    out = ["## throughput: real AsyncClient, one connection per process, one acquire at a time"]
    out.append(
        f"{'processes':>9} {'echo rt/s':>11} {'daemon acq/s':>13} {'ratio':>6} "
        f"{'echo p50/p99 µs':>16} {'daemon p50/p99 µs':>18}"
    )
    for echo, served in results.clients:
        ratio = served.per_second / echo.per_second
        out.append(
            f"{echo.processes:>9} {echo.per_second:>11,.0f} {served.per_second:>13,.0f} "
            f"{ratio:>6.2f} {_us(echo.p50) + ' / ' + _us(echo.p99):>16} "
            f"{_us(served.p50) + ' / ' + _us(served.p99):>18}"
        )
    out.append("")
    acquires = results.pipeline[0].acquires
    out.append(f"## server capacity: {acquires:,} acquires pipelined over one connection (best)")
    out.append(f"{'server':<26} {'per second':>11} {'µs/acquire':>11} {'minus echo':>11} {'errors':>7}")
    echo_row = results.pipeline[0]
    for row in results.pipeline:
        extra = row.micros_per_acquire - echo_row.micros_per_acquire
        out.append(
            f"{row.server:<26} {row.acquires / row.seconds:>11,.0f} "
            f"{row.micros_per_acquire:>11.2f} {extra:>+11.2f} {row.errors:>7}"
        )
    out.append("")
    out.append("## daemon memory (VmRSS; metrics and HTTP on unless said)")
    for label, mib in results.memory.items():
        out.append(f"{label:<45} {mib:>7.1f} MiB = {mib * 1.048576:>5.1f} MB")
    out.append("")
    out.append("## targets")
    out.extend(targets(results, providers))
    return "\n".join(out) + "\n"


def targets(results: Results, providers: int) -> list[str]:
    lines = []
    echo_row, *daemon_rows = results.pipeline
    for row in daemon_rows:
        extra = row.micros_per_acquire - echo_row.micros_per_acquire
        verdict = "met" if extra <= 1.5 else "NOT met"
        lines.append(f"server time per acquire - echo's <= 1.5 µs, {row.server}: {extra:+.2f} µs, {verdict}")
    at16 = [pair for pair in results.clients if pair[0].processes == 16]
    for echo, served in at16:
        ratio = served.per_second / echo.per_second
        lines.append(f"16 processes >= 80% of echo: {ratio:.0%}, {'met' if ratio >= 0.8 else 'NOT met'}")
        lines.append(
            f"16 processes p99 < 1 ms: {served.p99 * 1e3:.2f} ms, {'met' if served.p99 < 1e-3 else 'NOT met'}"
        )
    key = f"{providers} providers configured, idle"
    if key in results.memory:
        mib = results.memory[key]
        lines.append(
            f"RSS < 50 MB with {providers} providers: {mib * 1.048576:.1f} MB ({mib:.1f} MiB), "
            f"{'met' if mib * 1.048576 < 50 else 'NOT met'}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (seconds)")
    parser.add_argument("--duration", type=float, help="seconds per client measurement")
    parser.add_argument("--acquires", type=int, help="pipelined acquires per repetition")
    args = parser.parse_args(argv)
    providers = 1000
    levels: tuple[int, ...]
    if args.quick:
        levels, duration, acquires, repetitions = (1, 16), 0.3, 5_000, 1
    else:
        levels, duration, acquires, repetitions = (1, 16, 64), 3.0, 100_000, 3
    duration = args.duration or duration
    acquires = args.acquires or acquires
    started = time.perf_counter()
    results = run(
        levels=levels,
        duration=duration,
        acquires=acquires,
        repetitions=repetitions,
        providers=providers,
    )
    print(format_results(results, providers), end="")
    print(f"(cpus: {os.cpu_count()}, took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
