"""Real redis-server processes for tests: one on a temporary Unix socket, or a 3-master Cluster.

Started by the tests that need them and stopped (or killed) by them; nothing is left running.
A Cluster needs TCP: its nodes listen on loopback ports only.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("RedisCluster", "RedisServer", "free_port", "redis_cli", "require_redis")

START_TIMEOUT = 10.0


def require_redis() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed: `make deps` installs them")


def redis_cli(*args: str, timeout: float = 10.0) -> str:
    result = subprocess.run(
        ["redis-cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class RedisServer:
    """One redis-server; `unix://` URL by default, or a loopback TCP port."""

    def __init__(self, work: Path, *, port: int = 0, extra: tuple[str, ...] = ()) -> None:
        require_redis()
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.socket_path = work / "redis.sock"
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket_path}"

    def cli_args(self) -> list[str]:
        return ["-p", str(self.port)] if self.port else ["-s", str(self.socket_path)]

    def cli(self, *args: str) -> str:
        return redis_cli(*self.cli_args(), *args)

    def start(self) -> None:
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.work),
            *self.extra,
        ]
        log = (self.work / "redis.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            probe = subprocess.run(
                ["redis-cli", "-s", str(self.socket_path), "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            if (
                probe.stdout.strip() in ("PONG", "NOAUTH Authentication required.")
                or "NOAUTH" in probe.stdout
            ):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start:\n{(self.work / 'redis.log').read_text()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: gone at once, its data with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    """A loopback port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 55000:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for a cluster node")


class RedisCluster:
    """Three masters on loopback, joined by `redis-cli --cluster create`."""

    def __init__(self, work: Path) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for index in range(3):
                port = free_port()
                self.nodes.append(
                    RedisServer(
                        work / f"node{index}",
                        port=port,
                        extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    )
                )
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            redis_cli("--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes")
            deadline = time.monotonic() + START_TIMEOUT
            while "cluster_state:ok" not in self.nodes[0].cli("cluster", "info"):
                assert time.monotonic() < deadline, "the cluster did not reach cluster_state:ok"
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
