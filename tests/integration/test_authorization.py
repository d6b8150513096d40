"""Who may do what (protocol.md): another user may ask for permits but not sabotage them.

Against the real daemon, running as root with a socket everyone may open (0666); the
hostile client is a throwaway user (tests/hostile.py). Its reports without a permit of
its own are counted and change nothing; its resets answer `forbidden`; trust given in
the config (uids, gids, the socket's group) lets it through.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hostile import ThrowawayUser, as_user_command, public_dir, run_as, throwaway_user
from support import clean_env

from ratelimitd.cli.commands import EX_NOPERM
from ratelimitd.ops.logs import LINES_PER_WINDOW

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from daemons import DaemonFactory, RunningDaemon

# Sends each request on one connection and prints every answer; `"permit": "$last"` echoes
# the permit of the last grant this peer received.
_ASK = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(20)
sock.connect(sys.argv[1])
stream = sock.makefile("rwb")
answers, last = [], None
for request in json.loads(sys.argv[2]):
    if request.get("permit") == "$last":
        request["permit"] = last
    stream.write(json.dumps(request).encode() + b"\\n")
    stream.flush()
    answer = json.loads(stream.readline())
    last = answer.get("permit", last)
    answers.append(answer)
print(json.dumps(answers))
"""

CONFIG = """
[server]
socket_mode = "0666"
[providers.p]
rate = "10/second"
[providers.slow]
rate = "1/second"
burst = 1
"""
PAUSE = {"op": "report", "provider": "p", "status": 429, "retry_after": 1e9}


@pytest.fixture(scope="module")
def user() -> Iterator[ThrowawayUser]:
    with throwaway_user() as made:
        yield made


def ask_as(
    user: ThrowawayUser, daemon: RunningDaemon, *requests: dict[str, Any], groups: Sequence[int] = ()
) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = run_as(
        user,
        _ASK.replace("sys.argv[1]", repr(str(daemon.socket_path))).replace(
            "sys.argv[2]", repr(json.dumps(list(requests)))
        ),
        groups=groups,
    )
    return answers


def start(daemon_factory: DaemonFactory, short_dir: Path, config: str = CONFIG) -> RunningDaemon:
    return daemon_factory(config, socket_path=public_dir(short_dir) / "r.sock")


@pytest.fixture(scope="module")
def shared(module_daemon_factory: DaemonFactory) -> Iterator[RunningDaemon]:
    """One daemon with the default trust for the tests that need no config of their own
    (each uses its own providers, created on first use unless configured above)."""
    directory = Path(tempfile.mkdtemp(prefix="rlt-", dir="/tmp"))
    try:
        yield module_daemon_factory(CONFIG, socket_path=public_dir(directory) / "r.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def assert_untouched(daemon: RunningDaemon, provider: str = "p") -> None:
    status = daemon.bucket_status(provider)
    assert (status["state"], status["streak"], status["paused_until"]) == ("ok", 0, None), status
    granted = daemon.request("acquire", provider=provider, timeout=0)
    assert granted["ok"] is True, granted


def test_an_untrusted_report_without_its_permit_only_counts(
    shared: RunningDaemon, user: ThrowawayUser
) -> None:
    daemon = shared
    flood = [PAUSE] * (LINES_PER_WINDOW + 10)
    answers = ask_as(
        user,
        daemon,
        *flood,
        {**PAUSE, "status": 401},
        {"op": "report", "provider": "not-yet", "status": 429, "retry_after": 1e9},
    )
    for answer in answers:
        assert answer["ok"] is True, answer
        assert (answer["action"], answer["trusted"]) == ("none", False), answer
    assert_untouched(daemon)
    assert_untouched(daemon, "not-yet")
    assert daemon.bucket_status("p")["reports"]["429"] == len(flood)  # counted
    daemon.wait_for_log("report ignored from an untrusted peer (uid")
    # Logged, but a flood becomes a few lines (then one line with a count).
    assert daemon.log().count("from an untrusted peer") <= LINES_PER_WINDOW


def test_an_untrusted_peer_may_report_on_its_own_permit(shared: RunningDaemon, user: ThrowawayUser) -> None:
    daemon = shared
    own = {"op": "report", "provider": "slow", "status": 429, "retry_after": 60, "permit": "$last"}
    # The second acquire waits for the next permit: a grant from the wait queue counts too.
    first, second, report = ask_as(
        user,
        daemon,
        {"op": "acquire", "provider": "slow"},
        {"op": "acquire", "provider": "slow", "timeout": 10},
        own,
    )
    assert first["ok"] is True, first
    assert second["ok"] is True, second
    assert report["action"] == "paused", report
    assert "trusted" not in report
    assert daemon.bucket_status("slow")["state"] == "paused"


def test_echoing_someone_elses_permit_changes_nothing(shared: RunningDaemon, user: ThrowawayUser) -> None:
    daemon = shared
    granted = daemon.request("acquire", provider="p3")
    (answer,) = ask_as(user, daemon, {**PAUSE, "provider": "p3", "permit": granted["permit"]})
    assert (answer["action"], answer["trusted"]) == ("none", False), answer
    assert_untouched(daemon, "p3")


def test_an_untrusted_reset_is_forbidden(shared: RunningDaemon, user: ThrowawayUser) -> None:
    daemon = shared
    assert daemon.request("report", provider="p4", status=429, retry_after=60)["action"] == "paused"
    forbidden, missing = ask_as(
        user, daemon, {"op": "reset", "provider": "p4"}, {"op": "reset", "provider": "nobody-made-this"}
    )
    for answer in (forbidden, missing):
        assert (answer["ok"], answer["error"]) == (False, "forbidden"), answer
        assert f"uid {user.uid} may not reset" in answer["message"]
    assert daemon.bucket_status("p4")["state"] == "paused"  # still: the reset did nothing
    assert daemon.request("reset", provider="p4")["ok"] is True  # root may
    assert daemon.bucket_status("p4")["state"] == "ok"


def test_the_cli_says_forbidden_with_its_own_exit_code(shared: RunningDaemon, user: ThrowawayUser) -> None:
    daemon = shared
    daemon.request("acquire", provider="p5")
    done = subprocess.run(
        as_user_command(user, "-m", "ratelimitd", "reset", "p5", "--socket", str(daemon.socket_path)),
        env=clean_env({"HOME": str(user.home)}),
        cwd=user.home,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == EX_NOPERM, done
    assert f"forbidden: provider: uid {user.uid} may not reset 'p5'" in done.stderr


def test_trust_given_to_a_user_for_one_provider(
    daemon_factory: DaemonFactory, short_dir: Path, user: ThrowawayUser
) -> None:
    config = CONFIG.replace(
        'rate = "10/second"', f'rate = "10/second"\ntrusted_peers = {{ uids = ["{user.name}"] }}'
    )
    daemon = start(daemon_factory, short_dir, config)
    paused, other, reset = ask_as(
        user,
        daemon,
        {**PAUSE, "retry_after": 60},
        {"op": "report", "provider": "slow", "status": 429, "retry_after": 60},
        {"op": "reset", "provider": "slow"},
    )
    assert paused["action"] == "paused", paused
    assert (other["action"], other["trusted"]) == ("none", False), other  # trusted for p only
    assert reset["error"] == "forbidden", reset
    assert daemon.bucket_status("p")["state"] == "paused"
    (reset_p,) = ask_as(user, daemon, {"op": "reset", "provider": "p"})
    assert reset_p["ok"] is True, reset_p


def test_trust_by_group_for_every_provider(
    daemon_factory: DaemonFactory, short_dir: Path, user: ThrowawayUser
) -> None:
    config = CONFIG + f"\n[trusted_peers]\ngids = [{user.gid}]\n"
    daemon = start(daemon_factory, short_dir, config)
    (paused,) = ask_as(user, daemon, {**PAUSE, "retry_after": 60})
    assert paused["action"] == "paused", paused


def test_the_sockets_group_is_trusted_by_default(shared: RunningDaemon, user: ThrowawayUser) -> None:
    daemon = shared
    socket_group = os.stat(daemon.socket_path).st_gid
    # A member of the socket's group (a supplementary group: SO_PEERGROUPS), like Docker's.
    (paused,) = ask_as(user, daemon, {**PAUSE, "provider": "p6", "retry_after": 60}, groups=[socket_group])
    assert paused["action"] == "paused", paused
