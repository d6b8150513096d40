"""Start, stop, reload, socket ownership and configuration of a real daemon process.

Every daemon here is a `python -m ratelimitd serve` subprocess started by `daemon_factory`.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import ConnectionClosed, run_cli, wait_for

from ratelimitd import __version__
from ratelimitd.core.paths import default_socket_path

if TYPE_CHECKING:
    from daemons import DaemonFactory

SLOW = """
[server]
max_timeout = 1000000.0

[providers.slow]
rate = "1/hour"
burst = 1
"""


def test_sigterm_answers_every_waiting_acquire_with_shutting_down(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(SLOW)
    clients = [daemon.client() for _ in range(3)]
    assert clients[0].request("acquire", provider="slow")["ok"] is True
    ids = [[c.submit("acquire", provider="slow", timeout=1e6) for _ in range(20)] for c in clients]
    wait_for(lambda: daemon.bucket_status("slow")["waiters"] == 60, what="60 waiters")
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    for client, sent in zip(clients, ids, strict=True):
        answers = client.read_responses(len(sent))
        assert sorted(a["id"] for a in answers) == sorted(sent)
        assert {a["error"] for a in answers} == {"shutting_down"}
        assert all(a["ok"] is False for a in answers)
        client.expect_closed()
    assert daemon.wait_exit(timeout=2.0) == 0
    assert time.monotonic() - started < 2.0
    assert not daemon.socket_path.exists(), "the socket file is removed on the way out"
    assert "answered 60 waiting acquires with shutting_down" in daemon.log()


def test_sigint_stops_cleanly_too(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("")
    assert daemon.request("ping")["ok"] is True
    daemon.send_signal(signal.SIGINT)
    assert daemon.wait_exit(timeout=2.0) == 0
    assert not daemon.socket_path.exists()


def test_a_second_daemon_on_a_live_socket_refuses_to_start(daemon_factory: DaemonFactory) -> None:
    first = daemon_factory("")
    second = daemon_factory("", socket_path=first.socket_path, ready=False)
    assert second.wait_exit(timeout=15) == 3
    assert "another ratelimitd is serving" in second.log()
    assert first.request("ping")["ok"] is True, "the first daemon keeps its socket"


def test_a_stale_socket_file_is_replaced(daemon_factory: DaemonFactory, short_dir: Path) -> None:
    stale = short_dir / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # the file stays, nobody listens: what a killed daemon leaves behind
    assert stat.S_ISSOCK(stale.lstat().st_mode)
    daemon = daemon_factory("", socket_path=stale)
    assert daemon.request("ping")["ok"] is True
    assert "replacing stale socket file" in daemon.log()


def test_a_regular_file_at_the_socket_path_is_not_replaced(
    daemon_factory: DaemonFactory, short_dir: Path
) -> None:
    precious = short_dir / "precious.sock"
    precious.write_text("not a socket")
    daemon = daemon_factory("", socket_path=precious, ready=False)
    assert daemon.wait_exit(timeout=15) == 3
    assert precious.read_text() == "not a socket"


def test_an_unusable_socket_directory_is_a_startup_failure(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("", socket_path=Path("/proc/ratelimitd-test/x.sock"), ready=False)
    assert daemon.wait_exit(timeout=15) == 3
    assert "cannot start" in daemon.log()


def test_the_socket_file_mode_is_0660_by_default(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("")
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o660


def test_the_socket_file_mode_can_be_configured(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory('[server]\nsocket_mode = "0600"\n')
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"RATELIMITD_SOCKET": "{d}/env.sock", "RUNTIME_DIRECTORY": "{d}/rt", "XDG_RUNTIME_DIR": "{d}/x"},
            "env.sock",
        ),
        ({"RUNTIME_DIRECTORY": "{d}/rt:{d}/other", "XDG_RUNTIME_DIR": "{d}/x"}, "rt/ratelimitd.sock"),
        ({"XDG_RUNTIME_DIR": "{d}/x"}, "x/ratelimitd.sock"),
    ],
)
def test_socket_path_precedence_without_the_flag(
    daemon_factory: DaemonFactory, short_dir: Path, variables: dict[str, str], expected: str
) -> None:
    env = {name: value.format(d=short_dir) for name, value in variables.items()}
    daemon = daemon_factory("", env=env, socket_path=short_dir / expected, socket_flag=False)
    assert daemon.request("ping")["ok"] is True
    assert stat.S_ISSOCK((short_dir / expected).lstat().st_mode)


def test_the_socket_flag_beats_the_environment(daemon_factory: DaemonFactory, short_dir: Path) -> None:
    env = {"RATELIMITD_SOCKET": str(short_dir / "env.sock"), "XDG_RUNTIME_DIR": str(short_dir)}
    daemon = daemon_factory("", env=env, socket_path=short_dir / "flag.sock")
    assert daemon.request("ping")["ok"] is True
    assert not (short_dir / "env.sock").exists()
    assert not (short_dir / "ratelimitd.sock").exists()


def test_the_environment_beats_the_config_file(daemon_factory: DaemonFactory, short_dir: Path) -> None:
    config = f'[server]\nsocket = "{short_dir / "file.sock"}"\n'
    env = {"RATELIMITD_SOCKET": str(short_dir / "env.sock")}
    daemon = daemon_factory(config, env=env, socket_path=short_dir / "env.sock", socket_flag=False)
    assert daemon.request("ping")["ok"] is True
    assert not (short_dir / "file.sock").exists()


def test_the_last_resort_socket_path_is_per_user() -> None:
    assert default_socket_path({}, uid=1234) == Path("/tmp/ratelimitd-1234/ratelimitd.sock")
    assert default_socket_path({}, os.getuid()) == Path(f"/tmp/ratelimitd-{os.getuid()}/ratelimitd.sock")
    # Empty variables count as unset.
    assert default_socket_path({"RATELIMITD_SOCKET": "", "XDG_RUNTIME_DIR": "/x"}, os.getuid()) == Path(
        "/x/ratelimitd.sock"
    )


def test_ratelimitd_config_names_the_file_when_no_flag_is_given(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    config = tmp_path / "from-env.toml"
    config.write_text('[providers.envprov]\nrate = "3/second"\n')
    daemon = daemon_factory(None, env={"RATELIMITD_CONFIG": str(config)})
    assert set(daemon.request("status")["providers"]) == {"envprov"}


def test_the_embedded_default_serves_with_no_file(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(None)
    granted = daemon.request("acquire", provider="anything")
    assert granted["ok"] is True
    assert granted["rate"] == pytest.approx(10.0)


def test_environment_overrides_the_file(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("[server]\nmax_providers = 50\n", env={"RATELIMITD_MAX_PROVIDERS": "1"})
    assert daemon.request("acquire", provider="one")["ok"] is True
    assert daemon.request("acquire", provider="two")["error"] == "too_many_providers"


def test_a_bad_feature_gate_value_stops_startup_naming_the_variable(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("", env={"RATELIMITD_FEATURE_LEARNING": "maybe"}, ready=False)
    assert daemon.wait_exit(timeout=15) == 2
    log = daemon.log()
    assert "RATELIMITD_FEATURE_LEARNING" in log
    assert "'maybe'" in log
    assert not daemon.socket_path.exists()


def test_a_bad_environment_value_stops_startup_naming_the_variable(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("", env={"RATELIMITD_MAX_PROVIDERS": "lots"}, ready=False)
    assert daemon.wait_exit(timeout=15) == 2
    assert "RATELIMITD_MAX_PROVIDERS:" in daemon.log()


def test_a_bad_config_file_stops_startup_with_every_error(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory('[server]\nmax_providers = -1\n[providers.x]\nrate = "fast"\n', ready=False)
    assert daemon.wait_exit(timeout=15) == 2
    log = daemon.log()
    assert "server.max_providers" in log
    assert "providers.x.rate" in log


def test_check_config_reports_every_error_with_its_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        """
        [server]
        max_connections = 0
        log_level = "loud"
        typo_key = 1

        [providers.openai]
        rate = "60/fortnight"
        buckets = []

        [providers."bad name"]
        rate = "1/s"
        """
    )
    result = run_cli(["check-config", str(bad)])
    assert result.returncode == 2
    for path in (
        "server.max_connections",
        "server.log_level",
        "server.typo_key",
        "providers.openai.rate",
        "providers.openai.buckets",
        "providers.bad name",
    ):
        assert f"{path}:" in result.stderr, (path, result.stderr)
    assert f"{bad}: 6 configuration error(s)" in result.stderr
    assert result.stdout == ""


def test_check_config_prints_ok_and_the_effective_config(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[providers.openai]\nrate = "60/minute"\nburst = 5\nbuckets = ["k1", "k2"]\n')
    result = run_cli(["check-config", str(good)])
    assert result.returncode == 0, result.stderr
    assert f"{good}: OK" in result.stdout
    assert "provider openai: requests 60/min (burst 5); buckets k1, k2 (failover)" in result.stdout


def test_check_config_shows_a_retry_after_scope_and_the_old_policy_name_note(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[learning]\npolicy = "seed"\n[providers.flaky]\nrate = "50/s"\nretry_after_scope = "request"\n'
    )
    result = run_cli(["check-config", str(good)])
    assert result.returncode == 0, result.stderr
    assert "  policy: streak\n" in result.stdout
    assert "note: learning.policy: 'seed' is the old name of 'streak'" in result.stdout
    assert (
        "provider flaky: requests 50/s (burst 50); buckets default (failover); retry_after_scope request"
        in (result.stdout)
    )


def test_check_config_applies_the_environment(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("")
    result = run_cli(["check-config", str(good)], env={"RATELIMITD_FEATURE_PERSIST": "maybe"})
    assert result.returncode == 2
    assert "RATELIMITD_FEATURE_PERSIST" in result.stderr


def test_check_config_of_an_unreadable_file(tmp_path: Path) -> None:
    result = run_cli(["check-config", str(tmp_path / "missing.toml")])
    assert result.returncode == 2
    assert "cannot read" in result.stderr


@pytest.mark.parametrize("args", [["version"], ["--version"]])
def test_version_prints_the_package_version(args: list[str]) -> None:
    result = run_cli(args)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ratelimitd {__version__}"


def test_sighup_reload_changes_limits_and_keeps_waiters(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(SLOW)
    client = daemon.client()
    assert client.request("acquire", provider="slow")["ok"] is True
    ids = [client.submit("acquire", provider="slow", timeout=1e5) for _ in range(3)]
    wait_for(lambda: daemon.bucket_status("slow")["waiters"] == 3, what="3 waiters")
    assert daemon.bucket_status("slow")["limits"]["requests"]["rate"] == pytest.approx(1 / 3600)
    daemon.reload(SLOW.replace('"1/hour"', '"20/second"'))
    assert daemon.bucket_status("slow")["limits"]["requests"]["rate"] == pytest.approx(20.0)
    answers = [client.response(rid) for rid in ids]
    assert all(a["ok"] for a in answers), answers
    assert [a["permit"] for a in answers] == sorted(a["permit"] for a in answers)
    assert daemon.bucket_status("slow")["granted"] == 4


def test_a_reload_can_add_and_remove_providers(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(SLOW)
    client = daemon.client()
    assert client.request("acquire", provider="slow")["ok"] is True
    rid = client.submit("acquire", provider="slow", timeout=1e5)
    wait_for(lambda: daemon.bucket_status("slow")["waiters"] == 1, what="a waiter")
    daemon.reload('[providers.added]\nrate = "5/second"\n')
    removed = client.response(rid)
    assert removed["error"] == "unknown_provider"
    assert "removed by a reload" in removed["message"]
    assert set(client.request("status")["providers"]) == {"added"}


def test_a_bad_config_on_reload_keeps_the_running_one(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(SLOW)
    client = daemon.client()
    assert client.request("acquire", provider="slow")["ok"] is True
    rid = client.submit("acquire", provider="slow", timeout=1e5)
    daemon.reload('[providers.slow]\nrate = "not a rate"\n', outcome="reload failed")
    assert "providers.slow.rate" in daemon.log()
    daemon.reload("this is [not toml", outcome="reload failed")
    status = daemon.bucket_status("slow")
    assert status["limits"]["requests"]["rate"] == pytest.approx(1 / 3600)
    assert status["waiters"] == 1
    assert client.request("ping")["ok"] is True
    assert not client.has_response(), "the waiter still waits under the old limits"
    assert rid == 2


def test_a_waiter_whose_deadline_passes_after_a_rate_cut_gets_timeout(daemon_factory: DaemonFactory) -> None:
    # The one timeout that comes from the waiter's timer rather than from the estimate: the
    # rate is cut (reload) while it waits, so the permit it was promised moves past its deadline.
    daemon = daemon_factory('[providers.cut]\nrate = "1/second"\nburst = 1\n')
    client = daemon.client()
    assert client.request("acquire", provider="cut")["ok"] is True
    rid = client.submit("acquire", provider="cut", timeout=1.5)
    daemon.reload('[providers.cut]\nrate = "1/hour"\nburst = 1\n')
    answer = client.response(rid)
    assert answer["error"] == "timeout", answer
    assert answer["retry_after"] > 60
    assert daemon.bucket_status("cut")["timeouts"] == 1


def test_a_daemon_killed_hard_leaves_a_socket_the_next_one_replaces(daemon_factory: DaemonFactory) -> None:
    first = daemon_factory("")
    first.proc.kill()
    assert first.wait_exit() == -signal.SIGKILL
    assert first.socket_path.exists()
    with pytest.raises((ConnectionRefusedError, ConnectionClosed)):
        first.request("ping")
    second = daemon_factory("", socket_path=first.socket_path)
    assert second.request("ping")["ok"] is True
