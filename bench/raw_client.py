"""Every request shape users send, from one raw NDJSON client, beside a bare echo server.

Started in the same run: `bench.echo_server` (the baseline) and two daemons in the
default configuration (HTTP and metrics on), one with learning off and one with
`RATELIMITD_FEATURE_LEARNING=1`. One client process on uvloop keeps 16 connections
busy with one request outstanding each, every request encoded with orjson, for each
shape below (a report's header values change from answer to answer, as a provider's
do); then the same shape pipelined over one connection. Printed per shape and
server: requests per second at 16 connections (best of the rounds) and its ratio to
echo's, p99 at 16 connections and its ratio to echo's, and µs per pipelined request
over echo's: wall time, and the server's own CPU time (its event loop thread, from
/proc/PID/schedstat), which a busy machine does not distort.

    python -m bench.raw_client [--quick] [--duration S] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from bench.throughput import daemon, echo_server, pipelined_lines, socket_of

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ("SHAPES", "Shape", "main")

CONNECTIONS: Final = 16
COMPILED: Final = Path(__file__).resolve().parent.parent / "build" / "compiled"
HUGE: Final = "1000000000/second"
CONFIG: Final = f"""
[server]
log_level = "warning"

[providers.plain]
rate = "{HUGE}"
burst = 1000000000

[providers.costly]
limits = [
  {{ unit = "requests", rate = "{HUGE}", burst = 1000000000 }},
  {{ unit = "tokens", rate = "{HUGE}", burst = 1000000000 }},
]

[providers.keys]
rate = "{HUGE}"
burst = 1000000000
buckets = ["first", "second"]
selection = "failover"

[providers.reported]
rate = "{HUGE}"
burst = 1000000000
"""

# What an OpenAI response carries (platform.openai.com/docs/guides/rate-limits, headers).
OPENAI_HEADERS: Final = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-tokens": "1999000",
    "x-ratelimit-reset-tokens": "30ms",
}


# Different answers carry different values, as a provider's do: the remaining counts go
# down, the resets move. A cycle of this many header sets, built once (the client's cost
# per request stays a dict lookup), with about a thousand distinct resets each.
HEADER_VARIANTS: Final = 4000


def openai_headers(index: int) -> dict[str, str]:
    """The OpenAI headers of the `index`-th answer of a cycle."""
    return {
        **OPENAI_HEADERS,
        "x-ratelimit-remaining-requests": str(9999 - index % 9000),
        "x-ratelimit-reset-requests": f"{1 + index % 60}ms",
        "x-ratelimit-remaining-tokens": str(1999000 - 397 * index),
        "x-ratelimit-reset-tokens": f"{1 + (30 + 7 * index) % 997}ms",
    }


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    request: dict[str, Any]  # the id is set per request
    variants: tuple[dict[str, Any], ...] = ()  # fields that change, request by request, cycled

    def request_for(self, index: int) -> dict[str, Any]:
        """The `index`-th request of this shape, its id included."""
        changes = self.variants[index % len(self.variants)] if self.variants else {}
        return {**self.request, **changes, "id": index}

    def line(self, index: int) -> bytes:
        return orjson.dumps(self.request_for(index), option=orjson.OPT_APPEND_NEWLINE)


SHAPES: Final = (
    Shape("acquire", {"op": "acquire", "provider": "plain"}),
    Shape(
        "acquire + cost map", {"op": "acquire", "provider": "costly", "cost": {"requests": 1, "tokens": 100}}
    ),
    Shape("acquire, two buckets (failover)", {"op": "acquire", "provider": "keys"}),
    Shape("report 200, no headers", {"op": "report", "provider": "reported", "status": 200}),
    Shape(
        "report 200 + 6 OpenAI headers",
        {"op": "report", "provider": "reported", "status": 200},
        tuple({"headers": openai_headers(index)} for index in range(HEADER_VARIANTS)),
    ),
)


# -- 16 connections, one request outstanding each -----------------------------------------------


class _Connection(asyncio.Protocol):
    """Sends the next request when the answer to the last one is complete."""

    def __init__(self, shape: Shape, done: Callable[[], None]) -> None:
        # The shape's requests built once: sending one then only sets its id, so the
        # client's own cost per request is the same with or without changing values.
        self._templates = [{**shape.request, **changes} for changes in shape.variants or ({},)]
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        self._sent_at = 0.0
        self._next_id = 0
        self.latencies = array("d")
        self.errors = 0
        self.stop_at = 0.0
        self.measuring = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def send(self) -> None:
        self._next_id += 1
        template = self._templates[self._next_id % len(self._templates)]
        template["id"] = self._next_id
        line = orjson.dumps(template, option=orjson.OPT_APPEND_NEWLINE)
        self._sent_at = time.perf_counter()
        assert self._transport is not None
        self._transport.write(line)

    def data_received(self, data: bytes) -> None:
        if not data.endswith(b"\n"):
            self._rest += data
            return
        if self._rest:
            data, self._rest = self._rest + data, b""
        now = time.perf_counter()
        if b'"ok":false' in data:
            self.errors += 1
        if self.measuring:
            self.latencies.append(now - self._sent_at)
        if now < self.stop_at:
            self.send()
        else:
            self._done()

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    per_second: float
    p99: float  # seconds
    errors: int


async def _closed_loop(path: Path, shape: Shape, duration: float) -> ClosedLoop:
    loop = asyncio.get_running_loop()
    remaining = CONNECTIONS
    finished = loop.create_future()

    def done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not finished.done():
            finished.set_result(None)

    connections: list[_Connection] = []
    for _ in range(CONNECTIONS):
        _, protocol = await loop.create_unix_connection(lambda: _Connection(shape, done), str(path))
        connections.append(protocol)
    # Warm up for a tenth of the run (code paths, socket buffers), then measure.
    warm_until = time.perf_counter() + min(0.2, duration / 10)
    for connection in connections:
        connection.stop_at = warm_until
        connection.send()
    await finished
    remaining = CONNECTIONS
    finished = loop.create_future()
    started = time.perf_counter()
    for connection in connections:
        connection.stop_at = started + duration
        connection.measuring = True
        connection.send()
    await finished
    elapsed = time.perf_counter() - started
    latencies = sorted(x for c in connections for x in c.latencies)
    for connection in connections:
        if connection._transport is not None:
            connection._transport.close()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return ClosedLoop(len(latencies) / elapsed, p99, sum(c.errors for c in connections))


def closed_loop(path: Path, shape: Shape, duration: float) -> ClosedLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_closed_loop(path, shape, duration))
    return uvloop.run(_closed_loop(path, shape, duration))


# -- the run ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of the process's main thread (its event loop), from /proc/PID/schedstat (ns)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


@dataclass(slots=True)
class Row:
    shape: str
    server: str
    closed: ClosedLoop
    micros: float  # wall time per pipelined request
    cpu_micros: float  # the server's CPU time per pipelined request
    pipeline_errors: int


def run(
    *, duration: float, rounds: int, pipelined: int, repetitions: int, compiled: Path | None = None
) -> list[Row]:
    """`compiled`: a tree built by tools/compiled.py; its daemon (learning off) is measured too."""
    directory = Path(tempfile.mkdtemp(prefix="rl-raw-"))
    learning_env = {**os.environ, "RATELIMITD_FEATURE_LEARNING": "1"}
    rows: list[Row] = []
    try:
        with contextlib.ExitStack() as stack:
            echo = stack.enter_context(echo_server(directory))
            off = stack.enter_context(daemon(directory, metrics=True, config=CONFIG, name="off"))
            on = stack.enter_context(
                daemon(directory, metrics=True, config=CONFIG, name="on", env=learning_env)
            )
            processes = {"echo": echo, "learning off": off, "learning on": on}
            if compiled is not None:
                compiled_env = {**os.environ, "PYTHONPATH": str(compiled.resolve())}
                processes["compiled, off"] = stack.enter_context(
                    daemon(directory, metrics=True, config=CONFIG, name="compiled", env=compiled_env)
                )
            servers = {name: socket_of(process) for name, process in processes.items()}
            for shape in SHAPES:
                best: dict[str, ClosedLoop] = {}
                for _ in range(rounds):  # the servers take turns, so drift hits all alike
                    for server, path in servers.items():
                        found = closed_loop(path, shape, duration)
                        if server not in best or found.per_second > best[server].per_second:
                            best[server] = found
                for server, path in servers.items():
                    lines = [shape.line(i) for i in range(pipelined)]
                    pid = processes[server].pid
                    cpu_before = cpu_seconds(pid)
                    row = pipelined_lines(server, path, lines, repetitions)
                    # The server's own CPU per request: what a busy machine does not distort.
                    sent = len(lines) * repetitions + min(len(lines), 20 * 256)  # + the warm-up
                    cpu = (cpu_seconds(pid) - cpu_before) / sent * 1e6
                    rows.append(
                        Row(shape.name, server, best[server], row.micros_per_acquire, cpu, row.errors)
                    )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def format_rows(rows: Sequence[Row]) -> str:
    out = [
        f"## every shape: one uvloop client, {CONNECTIONS} connections x 1 outstanding; pipelined over 1",
        f"{'request':<32} {'server':<13} {'req/s':>9} {'of echo':>8} {'p99 µs':>7} {'p99/echo':>9} "
        f"{'pipe µs':>8} {'over echo':>10} {'cpu µs':>7} {'over echo':>10} {'errors':>7}",
    ]
    echo: Row | None = None
    for row in rows:
        if row.server == "echo":
            echo = row
        assert echo is not None
        out.append(
            f"{row.shape:<32} {row.server:<13} {row.closed.per_second:>9,.0f} "
            f"{row.closed.per_second / echo.closed.per_second:>8.2f} {row.closed.p99 * 1e6:>7.0f} "
            f"{row.closed.p99 / echo.closed.p99:>9.2f} {row.micros:>8.2f} {row.micros - echo.micros:>+10.2f} "
            f"{row.cpu_micros:>7.2f} {row.cpu_micros - echo.cpu_micros:>+10.2f} "
            f"{row.closed.errors + row.pipeline_errors:>7}"
        )
    out.append("")
    out.append("## targets (every shape, each daemon)")
    out.extend(targets(rows))
    return "\n".join(out) + "\n"


def targets(rows: Sequence[Row]) -> list[str]:
    """The issue's four targets, judged for each daemon over every shape."""
    echo = {row.shape: row for row in rows if row.server == "echo"}
    servers = list(dict.fromkeys(row.server for row in rows if row.server != "echo"))
    lines = []
    for server in servers:
        mine = [r for r in rows if r.server == server]
        ratio, low = min((r.closed.per_second / echo[r.shape].closed.per_second, r.shape) for r in mine)
        p99, high = max((r.closed.p99 / echo[r.shape].closed.p99, r.shape) for r in mine)
        lines += [
            f"{server}: >= 0.90 of echo at {CONNECTIONS} connections: lowest {ratio:.2f} ({low}), "
            f"{'met' if ratio >= 0.90 else 'NOT met'}",
            f"{server}: p99 <= 1.2x echo's: highest {p99:.2f}x ({high}), "
            f"{'met' if p99 <= 1.2 else 'NOT met'}",
        ]
        # Pipelined, the server is the bottleneck: its CPU per request is its time per
        # request, read from the kernel, so the verdict holds on a busy machine too.
        for headers in (False, True):
            bound = 5.0 if headers else 1.5
            chosen = [r for r in mine if ("headers" in r.shape) == headers]
            extra, worst = max((r.cpu_micros - echo[r.shape].cpu_micros, r.shape) for r in chosen)
            what = "report with headers" if headers else "every other shape"
            lines.append(
                f"{server}: pipelined <= +{bound:g} µs over echo (server CPU), {what}: worst {extra:+.2f} µs "
                f"({worst}), {'met' if extra <= bound else 'NOT met'}"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_client", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (seconds)")
    parser.add_argument("--duration", type=float, help="seconds per closed-loop measurement")
    parser.add_argument("--rounds", type=int, help="closed-loop rounds per server and shape (best kept)")
    parser.add_argument(
        "--compiled",
        type=Path,
        default=COMPILED if COMPILED.is_dir() else None,
        help="a tree built by tools/compiled.py (default: build/compiled when `make compiled` built it)",
    )
    parser.add_argument(
        "--no-compiled", dest="compiled", action="store_const", const=None, help="no compiled daemon row"
    )
    args = parser.parse_args(argv)
    if args.quick:
        duration, rounds, pipelined, repetitions = 0.3, 1, 5_000, 1
    else:
        # Best of 4 rounds: on a shared 2-core machine a round swings by 10-20 % either way.
        duration, rounds, pipelined, repetitions = 1.5, 4, 50_000, 3
    duration = args.duration or duration
    rounds = args.rounds or rounds
    started = time.perf_counter()
    rows = run(
        duration=duration, rounds=rounds, pipelined=pipelined, repetitions=repetitions, compiled=args.compiled
    )
    print(format_rows(rows), end="")
    print(f"(cpus: {os.cpu_count()}, took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
