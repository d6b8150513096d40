"""One careless or hostile client must not exhaust the daemon for everyone (real daemon).

A pipelined burst of costly requests is answered a bounded amount at a time (reading stops
until the answers drain), so memory stays flat and an unrelated client is served at once;
cost maps are bounded, and what the provider does not limit never waits in a queue. Bounds
are generous on purpose: the failures they catch were gigabytes and tens of seconds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
from support import NdjsonClient, peak_rss_kib

if TYPE_CHECKING:
    from daemons import DaemonFactory, RunningDaemon

RSS_GROWTH_BOUND_KIB = 200 * 1024
PING_BOUND = 2.0  # seconds for an unrelated client's ping


def providers_config(count: int) -> str:
    blocks = [f'[providers.p{i}]\nrate = "100000/second"\nburst = 100000\n' for i in range(count)]
    return '[server]\nlog_level = "warning"\n\n' + "\n".join(blocks)


def fill_histories(daemon: RunningDaemon, providers: int, entries: int = 50) -> None:
    """Every provider's bucket gets a full history: failed reports that change nothing are kept."""
    batch = b"".join(
        orjson.dumps({"op": "report", "provider": f"p{i}", "status": 500}) + b"\n" for i in range(providers)
    )
    with NdjsonClient.connect(daemon.socket_path, timeout=60.0) as client:
        for _ in range(entries):
            client.send_raw(batch)
            assert all(answer["ok"] for answer in client.read_responses(providers))


def ping_seconds(daemon: RunningDaemon) -> float:
    started = time.monotonic()
    with NdjsonClient.connect(daemon.socket_path, timeout=30.0) as client:
        assert client.request("ping")["ok"] is True
    return time.monotonic() - started


def test_a_pipelined_status_burst_never_read_stays_bounded(daemon_factory: DaemonFactory) -> None:
    providers, lines = 200, 400  # ~1.2 MB per answer: ~470 MB if all were built at once
    daemon = daemon_factory(providers_config(providers))
    fill_histories(daemon, providers)
    before = daemon.rss_kib()
    flood = daemon.client(timeout=30.0)
    flood.send_raw(b'{"op":"status"}\n' * lines)  # ~6 KB in one write, never read
    worst = max(ping_seconds(daemon) for _ in range(10))
    growth = peak_rss_kib(daemon.pid) - before
    assert worst < PING_BOUND, f"an unrelated ping took {worst:.2f} s"
    assert growth < RSS_GROWTH_BOUND_KIB, f"RSS grew by {growth / 1024:.0f} MiB"
    # The flooder still gets its answers, in order, once it reads them.
    first = flood.read_responses(3, timeout=30.0)
    assert [len(answer["providers"]) for answer in first] == [providers] * 3
    flood.close()
    assert ping_seconds(daemon) < PING_BOUND


def test_a_pipelined_burst_is_answered_completely(daemon_factory: DaemonFactory) -> None:
    """Lines held back by the bound are answered later, all of them, none twice."""
    daemon = daemon_factory(providers_config(50))
    fill_histories(daemon, 50, entries=20)
    with NdjsonClient.connect(daemon.socket_path, timeout=60.0) as client:
        requests = [{"op": "status", "id": i} if i % 3 == 0 else {"op": "ping", "id": i} for i in range(300)]
        client.send(*requests)
        answers = client.read_responses(300, timeout=60.0)
    assert sorted(answer["id"] for answer in answers) == list(range(300))
    assert all(answer["ok"] for answer in answers)


COST_CONFIG = """
[server]
log_level = "warning"

[providers.calls]
rate = "10/second"
burst = 10

[providers.llm]
limits = [
  { unit = "requests", rate = "10/second", burst = 10 },
  { unit = "tokens", rate = "1000/second", burst = 1000 },
]
"""


def test_cost_maps_are_bounded_and_unlimited_units_are_dropped(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(COST_CONFIG)
    client = daemon.client()
    seventeen = {f"u{i}": 1 for i in range(17)}
    refused = client.request("acquire", provider="calls", cost=seventeen)
    assert (refused["ok"], refused["error"]) == (False, "bad_request")
    assert refused["message"] == "cost: at most 16 units, got 17"
    granted = client.request("acquire", provider="llm", cost={"tokns": 100, "tokens": 100}, timeout=0)
    assert granted["ok"] is True
    assert granted["ignored_units"] == ["tokns"]
    # A cost object without `requests` takes one: 9 more fit the burst of 10, then none.
    answers = [client.request("acquire", provider="llm", cost={"tokens": 1}, timeout=0) for _ in range(10)]
    assert [answer["ok"] for answer in answers] == [True] * 9 + [False]
    assert answers[-1]["error"] == "timeout"
    free = client.request("acquire", provider="llm", cost={"requests": 0, "tokens": 1}, timeout=0)
    assert free["ok"] is True
    assert ping_seconds(daemon) < PING_BOUND


def unit_names(waiter: int) -> dict[str, int]:
    return {f"w{waiter}u{j}": 1 for j in range(16)}


SLOW_CONFIG = """
[server]
log_level = "warning"

[providers.slow]
rate = "1/second"
burst = 1
"""


def test_waiters_with_many_unit_names_cost_nothing_to_estimate(daemon_factory: DaemonFactory) -> None:
    """2,000 waiters naming 16 distinct unlimited units each: an unrelated acquire stays fast."""
    daemon = daemon_factory(SLOW_CONFIG)
    holder = daemon.client(timeout=30.0)
    assert holder.request("acquire", provider="slow")["ok"] is True
    before = daemon.rss_kib()
    waiters = daemon.client(timeout=60.0)
    lines = b"".join(
        orjson.dumps({"op": "acquire", "provider": "slow", "timeout": 3000, "cost": unit_names(i)}) + b"\n"
        for i in range(2000)
    )
    waiters.send_raw(lines + b'{"op":"ping","id":"settled"}\n')
    assert waiters.response("settled", timeout=60.0)["ok"] is True
    started = time.monotonic()
    answer = holder.request("acquire", provider="slow", timeout=0)
    took = time.monotonic() - started
    assert answer["error"] == "timeout"
    assert answer["retry_after"] > 1000  # behind the 2,000 waiters, one request each
    assert took < PING_BOUND
    waiters.close()  # 2,000 waiters leave at once
    assert ping_seconds(daemon) < PING_BOUND
    assert daemon.rss_kib() - before < RSS_GROWTH_BOUND_KIB


def test_an_op_of_any_json_type_is_answered_on_every_line(daemon_factory: DaemonFactory) -> None:
    """One line in 16 is timed for the per-op histogram: an unhashable `op` must not break that."""
    daemon = daemon_factory(COST_CONFIG)
    with NdjsonClient.connect(daemon.socket_path) as client:
        for op in ([1], {"a": 1}, 3.5, None, True):
            client.send(*({"op": op, "id": i} for i in range(40)))
            answers = client.read_responses(40)
            assert sorted(answer["id"] for answer in answers) == list(range(40))
            assert {answer.get("error") for answer in answers} <= {"bad_request", "unknown_op"}
        assert client.request("ping")["ok"] is True
