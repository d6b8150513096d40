"""What one hostile or careless neighbour costs everyone else: RSS and an unrelated ping.

Each case starts a real `ratelimitd serve`, measures its VmRSS and how long an unrelated
`ping` on another connection takes while the case runs, then stops it:

1. status flood: 150 `{"op":"status"}` lines in one write, never read, with 1,000
   providers that each have a full history.
2. cost maps: waiting acquires whose cost names many units the provider does not limit
   (the 5,500-unit maps of the report, or 16 when the daemon refuses more), then an
   unrelated acquire's time, then RSS after the waiters disconnected.
3. abandoned waiters: 400 waiters with distinct unit names leave behind a head that stays.

    python -m bench.hostile [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ("main",)

STARTUP_BOUND = 30.0


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _connect(path: Path, timeout: float = 30.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def _ping_seconds(path: Path, timeout: float = 60.0) -> float:
    """Time for a fresh connection's `ping` to be answered."""
    started = time.perf_counter()
    with _connect(path, timeout) as sock:
        sock.sendall(b'{"op":"ping"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return time.perf_counter() - started


def _read_lines(sock: socket.socket, count: int, until: str | None = None) -> list[dict[str, object]]:
    """`count` answers, or those up to the one whose id is `until`."""
    buffer = b""
    out: list[dict[str, object]] = []
    while len(out) < count and not (until is not None and out and out[-1].get("id") == until):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        out.extend(orjson.loads(line) for line in lines if line)
    return out


@contextlib.contextmanager
def _daemon(directory: Path, config: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    path = directory / "d.sock"
    config_path = directory / "d.toml"
    config_path.write_text(config)
    argv = [sys.executable, "-m", "ratelimitd", "serve", "--no-http", "--socket", str(path)]
    argv += ["--config", str(config_path)]
    with (directory / "d.log").open("ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + STARTUP_BOUND
        while True:
            with contextlib.suppress(OSError):
                _ping_seconds(path, 1.0)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start:\n" + (directory / "d.log").read_text()[-2000:])
            time.sleep(0.05)
        yield process, path
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Watch:
    """Samples the daemon's RSS and pings it from a thread while a case runs."""

    def __init__(self, pid: int, path: Path) -> None:
        self.pid = pid
        self.path = path
        self.peak_rss = _rss_mib(pid)
        self.worst_ping = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss), threading.Thread(target=self._ping)]

    def _rss(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                self.peak_rss = max(self.peak_rss, _rss_mib(self.pid))

    def _ping(self) -> None:
        while not self._stop.wait(0.05):
            started = time.perf_counter()
            try:
                took = _ping_seconds(self.path)
            except OSError:  # no answer within the timeout: count the time waited
                took = time.perf_counter() - started
            self.worst_ping = max(self.worst_ping, took)

    def __enter__(self) -> _Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _providers_config(count: int, rate: str = "100000/second", burst: int = 100000) -> str:
    blocks = [f'[providers.p{i}]\nrate = "{rate}"\nburst = {burst}\n' for i in range(count)]
    return '[server]\nlog_level = "warning"\n\n' + "\n".join(blocks)


def status_flood(directory: Path, providers: int, lines: int, hold: float) -> list[str]:
    with _daemon(directory, _providers_config(providers)) as (process, path):
        # Each failed report that changes nothing lands in the bucket's bounded history (50).
        with _connect(path, 120.0) as sock:
            report = [
                orjson.dumps({"op": "report", "provider": f"p{i}", "status": 500}) + b"\n"
                for i in range(providers)
            ]
            for _ in range(50):
                sock.sendall(b"".join(report))
                _read_lines(sock, providers)
        before = _rss_mib(process.pid)
        flood = _connect(path)
        with _Watch(process.pid, path) as watch:
            flood.sendall(b'{"op":"status"}\n' * lines)
            time.sleep(hold)
        flood.close()
        after_close = _ping_seconds(path)
        return [
            f"status flood ({lines} lines, {providers} providers with history, unread for {hold:g} s):",
            f"  RSS {before:.0f} MiB -> peak {watch.peak_rss:.0f} MiB; "
            f"worst unrelated ping {watch.worst_ping:.3f} s; ping after close {after_close:.3f} s",
        ]


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


def _costly_acquire(i: int, units: int) -> bytes:
    # Short distinct names, so 5,500 of them fit in one 64 KiB line.
    cost = {_base36(i * units + j): 1 for j in range(units - 1)}
    cost["requests"] = 1
    return orjson.dumps({"op": "acquire", "id": i, "provider": "slow", "cost": cost, "timeout": 3600}) + b"\n"


SLOW = """
[server]
log_level = "warning"
max_waiters = 100000

[providers.slow]
rate = "1/second"
burst = 1
"""


def cost_maps(directory: Path, waiters: int, units: int) -> list[str]:
    with _daemon(directory, SLOW) as (process, path):
        before = _rss_mib(process.pid)
        holder = _connect(path)
        holder.sendall(b'{"op":"acquire","provider":"slow","id":"first"}\n')  # takes the burst
        _read_lines(holder, 1)
        clients = [_connect(path, 300.0) for _ in range(10)]
        refused = granted = 0
        with _Watch(process.pid, path) as watch:
            for index in range(waiters):
                clients[index % len(clients)].sendall(_costly_acquire(index, units))
            # Answers come back only for refusals; the rest wait: settle with a ping each.
            for client in clients:
                client.sendall(b'{"op":"ping","id":"settle"}\n')
                for answer in _read_lines(client, 1 + waiters, until="settle"):
                    refused += answer.get("ok") is False
                    granted += answer.get("ok") is True and answer.get("id") != "settle"
            queued_rss = _rss_mib(process.pid)
            started = time.perf_counter()
            holder.sendall(b'{"op":"acquire","provider":"slow","id":"other","timeout":0}\n')
            _read_lines(holder, 1)
            unrelated = time.perf_counter() - started
        for client in clients:
            client.close()
        time.sleep(1.0)
        _ping_seconds(path)
        left_rss = _rss_mib(process.pid)
        holder.close()
        return [
            f"cost maps ({waiters} acquires of {units} units, all but requests unlimited; "
            f"{refused} refused, {granted} granted):",
            f"  RSS {before:.0f} -> {queued_rss:.0f} MiB queued (peak {watch.peak_rss:.0f}) -> "
            f"{left_rss:.0f} MiB after they left; an unrelated acquire took {unrelated:.3f} s; "
            f"worst ping {watch.worst_ping:.3f} s",
        ]


def abandoned(directory: Path, waiters: int, units: int) -> list[str]:
    with _daemon(directory, SLOW) as (process, path):
        holder = _connect(path)
        holder.sendall(b'{"op":"acquire","provider":"slow","id":"first"}\n')
        _read_lines(holder, 1)
        holder.sendall(b'{"op":"acquire","provider":"slow","id":"head","timeout":120}\n')  # stays
        before = _rss_mib(process.pid)
        for index in range(waiters):
            with _connect(path) as client:
                client.sendall(_costly_acquire(index, units) + b'{"op":"ping","id":"settle"}\n')
                _read_lines(client, 2, until="settle")
        _ping_seconds(path)
        after = _rss_mib(process.pid)
        holder.close()
        return [
            f"abandoned waiters ({waiters} with {units} distinct units each, behind a head that stays):",
            f"  RSS {before:.0f} -> {after:.0f} MiB",
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller cases")
    parser.add_argument("--units", type=int, default=5500, help="units per cost map (default 5500)")
    parser.add_argument("--waiters", type=int, help="waiting acquires of the cost-map case")
    parser.add_argument("cases", nargs="*", help="only these: flood costs abandoned")
    args = parser.parse_args(argv)
    quick = args.quick
    with tempfile.TemporaryDirectory(prefix="rl-hostile-") as tmp:
        root = Path(tmp)
        cases: list[tuple[str, Callable[[Path], list[str]]]] = [
            ("flood", lambda d: status_flood(d, 200 if quick else 1000, 20 if quick else 150, 3.0)),
            ("costs", lambda d: cost_maps(d, args.waiters or (300 if quick else 3000), args.units)),
            ("abandoned", lambda d: abandoned(d, 40 if quick else 400, args.units)),
        ]
        for name, case in cases:
            if args.cases and name not in args.cases:
                continue
            directory = root / name
            directory.mkdir()
            for line in case(directory):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
