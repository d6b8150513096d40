"""Clients talk only to a daemon run by a user they trust (SO_PEERCRED), and say why not.

Against real daemons: a "hijacker" daemon run by a throwaway user (tests/hostile.py) on
the socket path the clients use; the async client, the blocking client and the CLI refuse
it before sending anything, unless told that user runs their daemon.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hostile import ThrowawayUser, public_dir, run_as, throwaway_user
from support import run_cli

from ratelimitd.client import LOCAL_FALLBACK_BUCKET, AsyncClient, Client, DaemonUnavailable, UntrustedDaemon

if TYPE_CHECKING:
    from collections.abc import Iterator

    from daemons import DaemonFactory, RunningDaemon

EX_UNAVAILABLE = 69


@pytest.fixture(scope="module")
def user() -> Iterator[ThrowawayUser]:
    with throwaway_user() as made:
        yield made


@pytest.fixture(scope="module")
def hijacker(module_daemon_factory: DaemonFactory, user: ThrowawayUser) -> Iterator[RunningDaemon]:
    """A daemon run by another user, on a socket path the tests' clients use (each test asks
    for its own provider, so what one test lets through does not show in another)."""
    directory = Path(tempfile.mkdtemp(prefix="rlt-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        os.chown(directory, user.uid, user.gid)
        yield module_daemon_factory(
            '[server]\nsocket_mode = "0666"\n', socket_path=directory / "r.sock", user=user
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def assert_nothing_reached(daemon: RunningDaemon, provider: str) -> None:
    providers = daemon.request("status")["providers"]
    assert provider not in providers, providers


def test_the_blocking_client_refuses_another_users_daemon(
    hijacker: RunningDaemon, user: ThrowawayUser
) -> None:
    with pytest.raises(UntrustedDaemon) as refused, Client(hijacker.socket_path) as client:
        client.acquire("sync")
    assert refused.value.uid == user.uid
    assert f"served by uid {user.uid} ({user.name})" in str(refused.value)
    assert "RATELIMITD_DAEMON_USER" in str(refused.value)
    assert isinstance(refused.value, DaemonUnavailable)
    assert_nothing_reached(hijacker, "sync")


def test_the_async_client_refuses_another_users_daemon(hijacker: RunningDaemon, user: ThrowawayUser) -> None:
    async def acquire() -> None:
        async with AsyncClient(hijacker.socket_path) as client:
            await client.acquire("async")

    with pytest.raises(UntrustedDaemon) as refused:
        asyncio.run(acquire())
    assert f"served by uid {user.uid}" in str(refused.value)
    assert_nothing_reached(hijacker, "async")


def test_the_cli_refuses_another_users_daemon(hijacker: RunningDaemon, user: ThrowawayUser) -> None:
    done = run_cli(["acquire", "cli"], env={"RATELIMITD_SOCKET": str(hijacker.socket_path)})
    assert done.returncode == EX_UNAVAILABLE, done
    assert f"served by uid {user.uid} ({user.name}), which this client does not trust" in done.stderr
    assert_nothing_reached(hijacker, "cli")


def test_a_daemon_user_named_by_the_client_is_trusted(hijacker: RunningDaemon, user: ThrowawayUser) -> None:
    with Client(hijacker.socket_path, daemon_user=user.name) as client:
        assert client.acquire("p").provider == "p"

    async def acquire() -> str:
        async with AsyncClient(hijacker.socket_path, daemon_user=user.uid) as client:
            return (await client.acquire("p")).provider

    assert asyncio.run(acquire()) == "p"
    env = {"RATELIMITD_SOCKET": str(hijacker.socket_path), "RATELIMITD_DAEMON_USER": user.name}
    done = run_cli(["acquire", "p"], env=env)
    assert done.returncode == 0, done


def test_falling_back_locally_instead_of_trusting(hijacker: RunningDaemon) -> None:
    with Client(hijacker.socket_path, fallback="local", fallback_rate=100) as client:
        assert client.acquire("local").bucket == LOCAL_FALLBACK_BUCKET
    assert_nothing_reached(hijacker, "local")


def test_roots_daemon_is_trusted_by_other_users(
    daemon_factory: DaemonFactory, short_dir: Path, user: ThrowawayUser
) -> None:
    daemon = daemon_factory('[server]\nsocket_mode = "0666"\n', socket_path=public_dir(short_dir) / "r.sock")
    code = f"""
import json
from ratelimitd.client import Client
with Client({str(daemon.socket_path)!r}) as client:
    print(json.dumps({{"bucket": client.acquire("p").bucket}}))
"""
    assert run_as(user, code) == {"bucket": "default"}


def test_an_unknown_daemon_user_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="daemon_user: no such user 'no-such-user-here'"):
        Client("/nonexistent.sock", daemon_user="no-such-user-here")
