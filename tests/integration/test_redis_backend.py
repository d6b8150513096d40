"""Many daemons, one limit: real daemons sharing buckets through a real redis-server.

Each test starts its own redis-server on a temporary Unix socket (or a 3-master Cluster on
loopback ports) and the daemons it needs, and stops them all. Windows are short (2-3 s) so
the whole file stays well under two minutes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from redis_servers import RedisCluster, RedisServer, free_port
from support import NdjsonClient, run_cli, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from daemons import DaemonLauncher, RunningDaemon

RATE = 200.0
BURST = 20


def backend_config(url: str, host: str, *, extra: str = "", provider: str = "") -> str:
    return f"""
[backend]
kind = "redis"
url = "{url}"
host_id = "{host}"
key_prefix = "t:"
expected_hosts = 2
reconnect_max = 0.5
{extra}

[providers.api]
rate = "{RATE:g}/s"
burst = {BURST}
{provider}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


class Load:
    """Threads that keep asking one daemon for permits until stopped; grants counted."""

    def __init__(self, daemon: RunningDaemon, *, threads: int = 4, timeout: float = 1.0) -> None:
        self.daemon = daemon
        self.timeout = timeout
        self.granted = 0
        self.answers: list[dict[str, object]] = []
        self.latest = 0.0  # the longest any answer took, in seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with NdjsonClient.connect(self.daemon.socket_path, timeout=self.timeout + 5) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                answer = client.request("acquire", provider="api", timeout=self.timeout)
                took = time.monotonic() - start
                with self._lock:
                    self.latest = max(self.latest, took)
                    self.answers.append(answer)
                    if answer.get("ok") is True:
                        self.granted += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 6)


def granted(daemon: RunningDaemon) -> int:
    return int(daemon.bucket_status("api")["granted"])


def shared_limit(daemons: list[RunningDaemon], seconds: float = 3.0) -> tuple[float, float]:
    """Grants of all `daemons` together over `seconds` once the burst is spent, and the expectation."""
    loads = [Load(d) for d in daemons]
    try:
        time.sleep(0.5)  # the burst and the first leases are spent
        before = [granted(d) for d in daemons]
        start = time.monotonic()
        time.sleep(seconds)
        after = [granted(d) for d in daemons]
        elapsed = time.monotonic() - start
    finally:
        for load in loads:
            load.stop()
    total = sum(after) - sum(before)
    return total, RATE * elapsed


@pytest.mark.parametrize("hosts", [2, 3])
def test_daemons_on_one_redis_share_one_limit(
    daemon_factory: DaemonLauncher, redis_server: RedisServer, hosts: int
) -> None:
    daemons = [daemon_factory(backend_config(redis_server.url, f"h{i}")) for i in range(hosts)]
    total, expected = shared_limit(daemons)
    assert abs(total - expected) <= 0.05 * expected, (total, expected)
    each = [granted(d) for d in daemons]
    assert all(n > 0 for n in each), each  # every host gets a part
    status = daemons[0].request("status")
    assert status["backend"]["up"] is True
    assert status["backend"]["kind"] == "redis"


def test_a_redis_cluster_shares_one_limit(daemon_factory: DaemonLauncher, tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path / "cluster")
    try:
        daemons = [
            daemon_factory(backend_config(cluster.url, f"h{i}", extra="cluster = true")) for i in range(2)
        ]
        total, expected = shared_limit(daemons)
        assert abs(total - expected) <= 0.05 * expected, (total, expected)
        assert daemons[1].request("status")["backend"]["up"] is True
        for daemon in daemons:
            daemon.stop()
    finally:
        cluster.stop()


LEARNING = {"RATELIMITD_FEATURE_LEARNING": "1"}
# A 429 whose headers say the rate limit is spent: evidence enough for one cut.
SPENT = {"x-ratelimit-limit-requests": "200", "x-ratelimit-remaining-requests": "0"}


def factor(daemon: RunningDaemon) -> float:
    return float(daemon.bucket_status("api")["factor"])


def test_a_cut_on_one_daemon_slows_the_other(
    daemon_factory: DaemonLauncher, redis_server: RedisServer
) -> None:
    a, b = (daemon_factory(backend_config(redis_server.url, host), env=LEARNING) for host in ("a", "b"))
    before_cut = [b.request("acquire", provider="api")["permit"] for _ in range(3)]
    permit = a.request("acquire", provider="api")["permit"]
    reply = a.request("report", provider="api", bucket="default", status=429, permit=permit, headers=SPENT)
    assert reply["action"] == "reduced", reply
    cut = factor(a)
    assert cut < 1.0
    wait_for(lambda: factor(b) == cut, timeout=3.0, what="b follows a's cut")
    # The rate b grants at is the shared one: its status and its next lease say so.
    assert b.bucket_status("api")["limits"]["requests"]["rate"] == pytest.approx(RATE * cut)
    assert b.request("status")["backend"]["buckets"]["api/default"]["factor"] == pytest.approx(cut)
    # One cut per round across hosts: b's 429s for permits granted before the cut are late.
    for permit in before_cut:
        late = b.request("report", provider="api", bucket="default", status=429, permit=permit)
        assert late["action"] == "none", late
    assert factor(b) == cut
    assert factor(a) == cut
    total, expected = shared_limit([a, b], seconds=2.0)
    # Never above the cut rate; a little below when the loaded test machine starves the load.
    assert 0.9 * expected * cut <= total <= 1.05 * expected * cut, (total, expected * cut)


def test_a_pause_on_one_daemon_holds_the_other_and_reset_on_either_clears_both(
    daemon_factory: DaemonLauncher, redis_server: RedisServer
) -> None:
    a, b = (daemon_factory(backend_config(redis_server.url, host), env=LEARNING) for host in ("a", "b"))
    assert b.request("acquire", provider="api")["ok"] is True
    reply = a.request("report", provider="api", bucket="default", status=429, retry_after=30)
    assert reply["action"] in ("paused", "reduced"), reply
    assert a.bucket_status("api")["state"] == "paused"
    wait_for(lambda: b.bucket_status("api")["state"] == "paused", timeout=1.0, what="b paused")
    refused = b.request("acquire", provider="api", timeout=0.2)
    assert refused["ok"] is False, refused
    assert refused["error"] in ("timeout", "all_buckets_exhausted"), refused
    assert b.request("reset", provider="api")["ok"] is True
    wait_for(lambda: a.bucket_status("api")["state"] == "ok", timeout=1.0, what="a no longer paused")
    assert a.request("acquire", provider="api", timeout=1.0)["ok"] is True
    assert b.request("acquire", provider="api", timeout=1.0)["ok"] is True


def readyz(daemon: RunningDaemon) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/readyz", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def backend_up(daemon: RunningDaemon) -> bool:
    return bool(daemon.request("status")["backend"]["up"])


def test_redis_killed_mid_run_falls_back_in_time_then_resyncs(
    daemon_factory: DaemonLauncher, redis_server: RedisServer
) -> None:
    a, b = (daemon_factory(backend_config(redis_server.url, h), http=True, env=LEARNING) for h in "ab")
    wait_for(lambda: readyz(a)[0] == 200, timeout=2.0, what="a ready")
    permit = a.request("acquire", provider="api")["permit"]
    a.request("report", provider="api", bucket="default", status=429, permit=permit, headers=SPENT)
    cut = factor(a)
    wait_for(lambda: factor(b) == cut, timeout=3.0, what="b follows a's cut")
    loads = [Load(d, threads=4, timeout=0.5) for d in (a, b)]
    try:
        time.sleep(0.3)
        redis_server.kill()
        wait_for(lambda: not backend_up(a) and not backend_up(b), timeout=2.0, what="both in fallback")
        code, body = readyz(a)
        assert code == 503, body
        assert "backend" in body
        # The fallback rate: each host alone at fallback_share (1/2) of the learned rate.
        before = [granted(d) for d in (a, b)]
        start = time.monotonic()
        time.sleep(2.0)
        each = [granted(d) - n for d, n in zip((a, b), before, strict=True)]
        elapsed = time.monotonic() - start
    finally:
        for load in loads:
            load.stop()
    local = RATE * cut * 0.5 * elapsed
    assert all(abs(n - local) <= 0.1 * local + 2 for n in each), (each, local)
    # No acquire waited past its timeout while Redis died (every answer came, none late).
    for load in loads:
        assert load.answers
        assert load.latest <= 0.5 + 0.25, load.latest
        assert {a.get("error") for a in load.answers if a.get("ok") is not True} <= {"timeout"}
    assert "limiting locally at 0.5 of the rate" in a.log()
    redis_server.start()  # empty: no data survived the SIGKILL
    wait_for(lambda: backend_up(a) and backend_up(b), timeout=10.0, what="both back on Redis")
    wait_for(lambda: readyz(a)[0] == 200, timeout=2.0, what="a ready again")
    # The restarted, empty Redis got the learned state back from the hosts.
    stored = float(redis_server.cli("hget", "t:{api:default}:gcra", "factor"))
    assert stored == pytest.approx(cut)
    total, expected = shared_limit([a, b], seconds=2.0)
    # Never above the cut rate; a little below when the loaded test machine starves the load.
    assert 0.9 * expected * cut <= total <= 1.05 * expected * cut, (total, expected * cut)


def test_script_flush_mid_run_is_harmless(daemon_factory: DaemonLauncher, redis_server: RedisServer) -> None:
    daemons = [daemon_factory(backend_config(redis_server.url, h)) for h in "ab"]
    flusher = threading.Timer(1.0, lambda: redis_server.cli("script", "flush"))
    flusher.start()
    try:
        total, expected = shared_limit(daemons, seconds=2.5)
    finally:
        flusher.join()
    assert abs(total - expected) <= 0.05 * expected, (total, expected)
    assert all(backend_up(d) for d in daemons)
    assert all(d.request("status")["backend"]["fallbacks"] == 0 for d in daemons)


def test_an_unknown_scheme_is_a_clear_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(backend_config("http://ops:hunter2@cache.internal:6379", "a"))
    result = run_cli(["check-config", str(config)])
    assert result.returncode == 2
    assert "backend.url: unknown scheme http:// in http://ops:***@cache.internal:6379" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_check_config_shows_the_backend_without_its_secret(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text(backend_config("rediss://ops@cache.internal:6380/1", "web-1"))
    result = run_cli(["check-config", str(config)], env={"RATELIMITD_REDIS_PASSWORD": "hunter2"})
    assert result.returncode == 0, result.stderr
    assert "backend: redis rediss://ops:***@cache.internal:6380/1 (password set)" in result.stdout
    assert "hunter2" not in result.stdout


def test_unreachable_at_start_serves_in_fallback_and_says_so(daemon_factory: DaemonLauncher) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    daemon = daemon_factory(backend_config(url, "a"), http=True)
    assert daemon.request("acquire", provider="api")["ok"] is True
    assert "is unreachable at start" in daemon.log()
    assert "limiting locally at 0.5 of the rate" in daemon.log()
    status = daemon.request("status")["backend"]
    assert status["up"] is False
    assert status["url"] == url
    code, body = readyz(daemon)
    assert code == 503
    assert "backend" in body
    base = f"http://127.0.0.1:{daemon.http_port}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
        assert 'ratelimitd_backend_up{kind="redis"} 0.0' in response.read().decode()
    with urllib.request.urlopen(f"{base}/v1/status", timeout=2) as response:
        assert json.loads(response.read())["backend"]["up"] is False


def test_a_wrong_password_names_the_url_without_its_secret(
    daemon_factory: DaemonLauncher, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", extra=("--requirepass", "right-one"))
    try:
        url = f"unix://{server.socket_path}"
        wrong = daemon_factory(backend_config(url, "a"), env={"RATELIMITD_REDIS_PASSWORD": "wrong-one"})
        assert wrong.request("acquire", provider="api")["ok"] is True  # served in fallback
        log = wrong.log()
        assert "authentication failed" in log, log
        assert f"Redis at unix://:***@{server.socket_path}" in log, log
        assert "wrong-one" not in log
        assert wrong.request("status")["backend"]["up"] is False
        right = daemon_factory(backend_config(url, "b"), env={"RATELIMITD_REDIS_PASSWORD": "right-one"})
        assert right.request("status")["backend"]["up"] is True
        assert "right-one" not in right.log() + str(right.request("status"))
        for daemon in (wrong, right):
            daemon.stop()
    finally:
        server.stop()


def test_tls_to_a_plain_server_is_a_clear_error(daemon_factory: DaemonLauncher, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())
    try:
        daemon = daemon_factory(backend_config(f"rediss://127.0.0.1:{server.port}/0", "a"))
        assert daemon.request("acquire", provider="api")["ok"] is True
        log = daemon.log()
        assert "unreachable at start" in log, log
        assert "rediss://127.0.0.1" in log
        assert "does the server speak TLS?" in log
        assert "Traceback" not in log
        daemon.stop()
    finally:
        server.stop()


def test_changing_the_backend_kind_on_reload_says_a_restart_is_needed(
    daemon_factory: DaemonLauncher, redis_server: RedisServer
) -> None:
    memory = '[providers.api]\nrate = "200/s"\nburst = 20\n'
    daemon = daemon_factory(memory)
    daemon.reload(backend_config(redis_server.url, "a"))
    assert "[backend] kind changed from memory to redis: this needs a restart; still running on memory" in (
        daemon.log()
    )
    assert "backend" not in daemon.request("status")
    assert daemon.request("acquire", provider="api")["ok"] is True


def lease_of(daemon: RunningDaemon) -> dict[str, Any]:
    bucket: dict[str, Any] = daemon.request("status")["backend"]["buckets"]["roomy/default"]
    return bucket


def paced(daemon: RunningDaemon, count: int = 60, pause: float = 0.005) -> None:
    """Acquires at about 200/s: a lease of ~15 that is not used up."""
    with daemon.client() as client:
        for _ in range(count):
            assert client.request("acquire", provider="roomy")["ok"] is True
            time.sleep(pause)


def test_unused_leases_go_back_when_idle_on_reload_and_at_shutdown(
    daemon_factory: DaemonLauncher, redis_server: RedisServer
) -> None:
    # A deep burst that refills slowly: what goes back shows in the bucket's tat.
    roomy = '[providers.roomy]\nrate = "10/s"\nburst = 1000\n'
    daemon = daemon_factory(backend_config(redis_server.url, "a") + roomy)
    paced(daemon)
    assert lease_of(daemon)["lease"]["requests"] > 0
    # Idle for a second: the lease goes back.
    wait_for(lambda: lease_of(daemon)["returned"] > 0, timeout=3.0, what="idle lease given back")
    assert lease_of(daemon)["lease"]["requests"] == 0
    returned = lease_of(daemon)["returned"]
    # A reload rebuilds the limiter: what it held goes back.
    paced(daemon)
    held = lease_of(daemon)["lease"]["requests"]
    assert held > 0
    daemon.reload(backend_config(redis_server.url, "a", provider="# reloaded") + roomy)
    wait_for(
        lambda: lease_of(daemon)["returned"] >= returned + held - 1e-6, timeout=2.0, what="reload gives back"
    )
    # At shutdown: the shared bucket gets back what the host held (its tat moves back).
    paced(daemon)
    assert lease_of(daemon)["lease"]["requests"] > 0
    before = float(redis_server.cli("hget", "t:{roomy:default}:gcra", "t:requests"))
    daemon.stop()
    after = float(redis_server.cli("hget", "t:{roomy:default}:gcra", "t:requests"))
    assert after < before


def test_the_documented_acl_user_is_enough(daemon_factory: DaemonLauncher, redis_server: RedisServer) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "multi-host.md"
    line = next(x.strip() for x in docs.read_text().splitlines() if x.strip().startswith("ACL SETUSER"))
    words = line.replace(">LONG-RANDOM-PASSWORD", ">pw-123").split()
    assert redis_server.cli(*words) == "OK"
    env = {**LEARNING, "RATELIMITD_REDIS_USERNAME": "ratelimitd", "RATELIMITD_REDIS_PASSWORD": "pw-123"}
    config = backend_config(redis_server.url, "a").replace('key_prefix = "t:"', 'key_prefix = "ratelimitd:"')
    daemon = daemon_factory(config, env=env)
    assert backend_up(daemon)
    permit = daemon.request("acquire", provider="api")["permit"]
    daemon.request("report", provider="api", bucket="default", status=429, permit=permit, headers=SPENT)
    wait_for(
        lambda: redis_server.cli("hget", "ratelimitd:{api:default}:learned", "version") == "1",
        timeout=2.0,
        what="the learned state written by the ACL user",
    )
    assert backend_up(daemon)
    assert daemon.request("status")["backend"]["failures"] == 0


def test_the_status_command_shows_the_backend_without_its_secret(
    daemon_factory: DaemonLauncher, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", extra=("--requirepass", "s3cret-pw"))
    try:
        url = f"unix://{server.socket_path}"
        daemon = daemon_factory(backend_config(url, "web-7"), env={"RATELIMITD_REDIS_PASSWORD": "s3cret-pw"})
        assert daemon.request("acquire", provider="api")["ok"] is True
        socket = ["--socket", str(daemon.socket_path)]
        human = run_cli(["status", *socket])
        assert human.returncode == 0, human.stderr
        first = human.stdout.splitlines()[0]
        assert first.startswith(f"backend: redis up at unix://:***@{server.socket_path}, host web-7, "), first
        assert "round trips/s" in first
        assert "  api/default: lease held requests " in human.stdout, human.stdout
        shown = run_cli(["status", "--json", *socket])
        assert shown.returncode == 0, shown.stderr
        backend = json.loads(shown.stdout)["backend"]
        assert (backend["kind"], backend["up"], backend["host_id"]) == ("redis", True, "web-7")
        assert "api/default" in backend["buckets"]
        assert "s3cret-pw" not in human.stdout + shown.stdout
        server.kill()  # Redis gone: the command says the host limits locally, and why
        wait_for(lambda: daemon.request("status")["backend"]["up"] is False, timeout=5)
        down = run_cli(["status", *socket])
        line = next(text for text in down.stdout.splitlines() if text.startswith("backend: "))
        assert line.startswith(f"backend: redis DOWN at unix://:***@{server.socket_path}, host web-7, "), line
        assert "; limiting locally at 0.5 of the rate: " in line, line
        daemon.stop()
    finally:
        server.stop()


def test_the_status_command_has_no_backend_line_with_the_memory_backend(
    daemon_factory: DaemonLauncher,
) -> None:
    daemon = daemon_factory(f'[providers.api]\nrate = "{RATE:g}/s"\n')
    socket = ["--socket", str(daemon.socket_path)]
    assert "backend" not in run_cli(["status", *socket]).stdout
    assert "backend" not in json.loads(run_cli(["status", "--json", *socket]).stdout)


def test_most_headroom_picks_the_key_with_more_room_in_the_shared_state(
    daemon_factory: DaemonLauncher, redis_server: RedisServer
) -> None:
    """Two keys; k1 mostly spent, k2 barely used. While leasing, the local limits grant
    nothing (both would read full): the shared bucket's view must pick k2."""
    provider = 'buckets = ["k1", "k2"]\nselection = "most_headroom"\n'
    config = backend_config(redis_server.url, "a", provider=provider)
    config = config.replace(f'rate = "{RATE:g}/s"\nburst = {BURST}', 'rate = "20/s"\nburst = 100')
    daemon = daemon_factory(config)
    for key, other, count in (("k2", "k1", 10), ("k1", "k2", 60)):
        for _ in range(count):  # back to back: the leases grow and stay ahead
            answer = daemon.request("acquire", provider="api", exclude=[other], timeout=1.0)
            assert answer["bucket"] == key, answer
    # Selection weighs the keys that can grant now, i.e. whose lease is not empty: both.
    leases: dict[str, Any] = {}
    for _ in range(20):
        leases = daemon.request("status")["backend"]["buckets"]
        empty = [key for key in ("k1", "k2") if leases[f"api/{key}"]["lease"]["requests"] < 1]
        if not empty:
            break
        other = "k2" if empty[0] == "k1" else "k1"
        assert daemon.request("acquire", provider="api", exclude=[other], timeout=1.0)["ok"] is True
        time.sleep(0.05)  # the refill it asks for arrives
    answer = daemon.request("acquire", provider="api", timeout=1.0)
    assert answer["bucket"] == "k2", (answer, leases)
