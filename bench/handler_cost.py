"""What the daemon's own code costs per request, without the kernel or a client.

The raw-client bench (`bench.raw_client`) measures what users see, but on a shared
2-core machine its socket round trips swing with every other process. Here the
daemon's real connection handler (`ratelimitd.daemon.server.Connection`, on the real
`Service` with metrics attached, in the default configuration) and the echo server's
handler (`bench.echo_server.EchoProtocol`, the baseline) are each fed the same lines,
one line per read as a client that waits for each answer sends them, with a
transport that drops what is written. Printed per request shape: CPU microseconds per
read (this process's CPU time, which other load does not inflate), best of the rounds,
and the daemon's extra over echo's. When `make compiled` built the compiled copy (or
`--compiled DIR` names one), the same table follows for it, from a child process.

    python -m bench.handler_cost [--quick] [--lines N] [--rounds N] [--compiled DIR | --no-compiled]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import logging
import os
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from bench.echo_server import EchoProtocol
from bench.raw_client import COMPILED, CONFIG, SHAPES, Shape
from ratelimitd import __version__
from ratelimitd.daemon.clock import SystemClock
from ratelimitd.daemon.config import parse_config
from ratelimitd.daemon.server import Connection, UnixServer
from ratelimitd.daemon.service import Service
from ratelimitd.ops.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("Row", "main", "run")


class _DroppingTransport:
    """Counts the answers a handler writes, and the errors among them, and drops them;
    never closing, never backed up. Its socket is one end of a real socket pair, so the
    daemon reads this process as its peer (SO_PEERCRED): a trusted local user, as in
    the raw-client bench."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self.answers = 0
        self.errors = 0

    def write(self, data: bytes) -> None:
        self.answers += data.count(b"\n")
        self.errors += data.count(b'"ok":false')

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._socket if name == "socket" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Row:
    shape: str
    echo: float  # CPU µs per one-line read
    off: float  # the daemon, learning off
    on: float  # the daemon, learning on
    errors: int  # error answers, or answers missing, over every handler


def _service(learning: bool, loop: asyncio.AbstractEventLoop) -> UnixServer:
    environ = dict(os.environ)
    environ.pop("RATELIMITD_FEATURE_LEARNING", None)
    if learning:
        environ["RATELIMITD_FEATURE_LEARNING"] = "1"
    config = parse_config(tomllib.loads(CONFIG), environ, "bench")
    service = Service(config, SystemClock(), loop)
    metrics = Metrics(
        CollectorRegistry(auto_describe=True), version=__version__, max_providers=config.server.max_providers
    )
    metrics.attach(service, wall=time.time, ready=lambda: True, saves=None, daemon=None)
    service.metrics = metrics
    return UnixServer(service, max_line_bytes=config.server.max_line_bytes, max_connections=16)


def _cpu_per_read(handler: EchoProtocol | Connection, lines: list[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for line in lines:
            handler.data_received(line)
        best = min(best, time.process_time() - started)
    return best / len(lines) * 1e6


async def _run(count: int, rounds: int) -> list[Row]:
    loop = asyncio.get_running_loop()
    servers = {False: _service(False, loop), True: _service(True, loop)}
    gc.freeze()  # as the daemon does after start
    ours, theirs = socket.socketpair()
    with ours, theirs:
        return [_shape_row(shape, servers, ours, count, rounds) for shape in SHAPES]


def _shape_row(
    shape: Shape, servers: dict[bool, UnixServer], ours: socket.socket, count: int, rounds: int
) -> Row:
    lines = [shape.line(i) for i in range(count)]
    costs: dict[str, float] = {}
    errors = 0
    for name in ("echo", "off", "on"):
        handler: EchoProtocol | Connection
        handler = EchoProtocol() if name == "echo" else Connection(servers[name == "on"])
        transport = _DroppingTransport(ours)
        handler.connection_made(transport)  # type: ignore[arg-type]
        costs[name] = _cpu_per_read(handler, lines, rounds)
        errors += transport.errors + (len(lines) * rounds - transport.answers)
    return Row(shape.name, costs["echo"], costs["off"], costs["on"], errors)


def run(*, count: int, rounds: int) -> list[Row]:
    logging.disable(logging.WARNING)  # first-use notes and the like are not the subject
    try:
        return asyncio.run(_run(count, rounds))
    finally:
        logging.disable(logging.NOTSET)


def format_rows(rows: Sequence[Row], *, title: str = "") -> str:
    out = [
        f"## the handlers' own CPU per one-line read (no kernel, no client){title}",
        f"{'request':<32} {'echo µs':>8} {'off µs':>8} {'over':>7} {'on µs':>8} {'over':>7} {'errors':>7}",
    ]
    out.extend(
        f"{row.shape:<32} {row.echo:>8.2f} {row.off:>8.2f} {row.off - row.echo:>+7.2f} "
        f"{row.on:>8.2f} {row.on - row.echo:>+7.2f} {row.errors:>7}"
        for row in rows
    )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handler_cost", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--lines", type=int, help="lines per round and handler")
    parser.add_argument("--rounds", type=int, help="rounds (best kept)")
    parser.add_argument(
        "--compiled",
        type=Path,
        default=COMPILED if COMPILED.is_dir() else None,
        help="also measure the daemon of a tree built by tools/compiled.py, in a child process "
        "(default: build/compiled when `make compiled` built it)",
    )
    parser.add_argument(
        "--no-compiled", dest="compiled", action="store_const", const=None, help="the interpreted daemon only"
    )
    args = parser.parse_args(argv)
    count, rounds = (2_000, 1) if args.quick else (50_000, 3)
    rows = run(count=args.lines or count, rounds=args.rounds or rounds)
    compiled = "ratelimitd/daemon/service.py" not in inspect.getfile(Service)
    print(format_rows(rows, title=", compiled" if compiled else ""), end="")
    if args.compiled is not None:
        return _run_compiled(args.compiled, argv or [])
    return 0


def _run_compiled(tree: Path, argv: Sequence[str]) -> int:
    """This bench again, in a child whose `ratelimitd` is the compiled copy in `tree`."""
    root = Path(__file__).resolve().parent.parent
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join((str(tree.resolve()), str(root)))}
    rest = [arg for arg in argv if not arg.startswith("--compiled") and arg != str(tree)]
    # -P: the compiled copy, not the source tree of the working directory.
    command = [sys.executable, "-P", "-m", "bench.handler_cost", *rest, "--no-compiled"]
    print(flush=True)
    return subprocess.run(command, env=environ, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
