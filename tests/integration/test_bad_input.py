"""Bad input gets a clear error and nothing breaks, against a real daemon.

Every error code of protocol v1 is produced here or in test_ops.py (`timeout`) and
test_lifecycle.py (`shutting_down`). After each bad input, the same connection (where
the spec keeps it open) and other clients keep being served.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any

from support import ConnectionClosed, NdjsonClient, wait_for

if TYPE_CHECKING:
    from daemons import DaemonFactory, RunningDaemon

CONFIG = """
[server]
max_timeout = 3600.0

[providers.p]
limits = [
  { unit = "requests", rate = "10/second", burst = 10 },
  { unit = "tokens", rate = "1000/minute", burst = 1000 },
]

[providers.keys]
rate = "10/second"
buckets = ["a", "b"]
"""


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# (line, expected error code, a fragment the message must contain). JSON cannot carry NaN or
# Infinity, and orjson refuses numbers that overflow a double (1e400): those lines are not
# valid JSON, so they get invalid_json; 1e-400 underflows to 0 and gets the field's range error.
BAD_LINES: list[tuple[bytes, str, str]] = [
    (b"not json", "invalid_json", "JSON"),
    (b'{"op": "ping"', "invalid_json", "JSON"),
    (b"\xff\xfe{}", "invalid_json", "UTF-8"),
    (b"[1, 2]", "invalid_json", "list"),
    (b'"ping"', "invalid_json", "str"),
    (b"42", "invalid_json", "int"),
    (b"null", "invalid_json", "NoneType"),
    (b'{"op":"acquire","provider":"p","cost":1e400}', "invalid_json", "infinity"),
    (b'{"op":"acquire","provider":"p","cost":NaN}', "invalid_json", "JSON"),
    (b'{"op":"acquire","provider":"p","timeout":Infinity}', "invalid_json", "JSON"),
    (b'{"op":"acquire","provider":"p","timeout":-Infinity}', "invalid_json", "JSON"),
    (b'{"op":"acquire","provider":"p","cost":1e-400}', "bad_request", "cost:"),
    (_line({}), "bad_request", "op: required"),
    (_line({"op": 5}), "bad_request", "op: must be a string"),
    (_line({"op": None}), "bad_request", "op: required"),
    (_line({"op": "ping", "id": 1.5}), "bad_request", "id:"),
    (_line({"op": "ping", "id": [1]}), "bad_request", "id:"),
    (_line({"op": "ping", "id": True}), "bad_request", "id:"),
    (_line({"op": "ping", "id": 123456789012345678901234567890}), "bad_request", "id:"),
    (_line({"op": "acquire"}), "bad_request", "provider: required"),
    (_line({"op": "acquire", "provider": 5}), "bad_request", "provider: must be a string"),
    (_line({"op": "acquire", "provider": ""}), "bad_request", "provider:"),
    (_line({"op": "acquire", "provider": "has space"}), "bad_request", "provider:"),
    (_line({"op": "acquire", "provider": "x" * 129}), "bad_request", "provider:"),
    (_line({"op": "acquire", "provider": "café"}), "bad_request", "provider:"),
    (_line({"op": "acquire", "provider": "a/b"}), "bad_request", "provider:"),
    (_line({"op": "acquire", "provider": "p", "cost": -1}), "bad_request", "cost:"),
    (_line({"op": "acquire", "provider": "p", "cost": 0}), "bad_request", "cost:"),
    (_line({"op": "acquire", "provider": "p", "cost": -0.0}), "bad_request", "cost:"),
    (_line({"op": "acquire", "provider": "p", "cost": "1"}), "bad_request", "cost: must be a number"),
    (_line({"op": "acquire", "provider": "p", "cost": True}), "bad_request", "cost: must be a number"),
    (_line({"op": "acquire", "provider": "p", "cost": [1]}), "bad_request", "cost: must be a number"),
    (_line({"op": "acquire", "provider": "p", "cost": {}}), "bad_request", "cost:"),
    (_line({"op": "acquire", "provider": "p", "cost": {"tokens": -5}}), "bad_request", "cost.tokens"),
    (_line({"op": "acquire", "provider": "p", "cost": {"tokens": "5"}}), "bad_request", "cost.tokens"),
    (_line({"op": "acquire", "provider": "p", "cost": {"bad unit": 1}}), "bad_request", "cost:"),
    (_line({"op": "acquire", "provider": "p", "timeout": -1}), "bad_request", "timeout:"),
    (_line({"op": "acquire", "provider": "p", "timeout": "5"}), "bad_request", "timeout:"),
    (_line({"op": "acquire", "provider": "p", "timeout": False}), "bad_request", "timeout:"),
    (_line({"op": "acquire", "provider": "p", "timeout": 1e300}), "bad_request", "timeout: must be <= 3600"),
    (_line({"op": "acquire", "provider": "p", "exclude": "a"}), "bad_request", "exclude:"),
    (_line({"op": "acquire", "provider": "p", "exclude": [1]}), "bad_request", "exclude:"),
    (_line({"op": "report", "provider": "p"}), "bad_request", "status: required"),
    (_line({"op": "report", "status": 200}), "bad_request", "provider: required"),
    (_line({"op": "report", "provider": "p", "status": 99}), "bad_request", "status:"),
    (_line({"op": "report", "provider": "p", "status": 600}), "bad_request", "status:"),
    (_line({"op": "report", "provider": "p", "status": 429.0}), "bad_request", "status:"),
    (_line({"op": "report", "provider": "p", "status": "oops"}), "bad_request", "status:"),
    (_line({"op": "report", "provider": "p", "status": True}), "bad_request", "status:"),
    (_line({"op": "report", "provider": "p", "status": 200, "permit": -1}), "bad_request", "permit:"),
    (_line({"op": "report", "provider": "p", "status": 200, "permit": "1"}), "bad_request", "permit:"),
    (_line({"op": "report", "provider": "p", "status": 200, "reason": ""}), "bad_request", "reason:"),
    (_line({"op": "report", "provider": "p", "status": 200, "reason": "r" * 129}), "bad_request", "reason:"),
    (
        _line({"op": "report", "provider": "p", "status": 200, "retry_after": -1}),
        "bad_request",
        "retry_after:",
    ),
    (_line({"op": "report", "provider": "p", "status": 200, "headers": []}), "bad_request", "headers:"),
    (
        _line({"op": "report", "provider": "p", "status": 200, "headers": {"a": 1}}),
        "bad_request",
        "headers.a",
    ),
    (_line({"op": "report", "provider": "p", "status": 200, "bucket": 5}), "bad_request", "bucket:"),
    (_line({"op": "report", "provider": "p", "status": 200, "bucket": "nope"}), "bad_request", "bucket:"),
    (_line({"op": "status", "provider": 5}), "bad_request", "provider:"),
    (_line({"op": "reset"}), "bad_request", "provider: required"),
    (_line({"op": "reset", "provider": "p", "bucket": "nope"}), "bad_request", "bucket:"),
    (_line({"op": "frobnicate"}), "unknown_op", "frobnicate"),
    (_line({"op": "PING"}), "unknown_op", "PING"),
    (_line({"op": ""}), "unknown_op", "op:"),
    (_line({"op": "acquire", "provider": "p", "cost": 11}), "cost_too_large", "burst is 10"),
    (_line({"op": "acquire", "provider": "p", "cost": 1e300}), "cost_too_large", "cost:"),
    (_line({"op": "acquire", "provider": "p", "cost": {"tokens": 1001}}), "cost_too_large", "tokens"),
    (b"\x00" * 100, "invalid_json", "JSON"),
    (b"}{" * 50, "invalid_json", "JSON"),
    (b'{"op":"ping"}{"op":"ping"}', "invalid_json", "JSON"),
]


def _assert_served(daemon: RunningDaemon, client: NdjsonClient | None = None) -> None:
    """The given connection (when still open) and a brand-new one both answer ping."""
    if client is not None:
        assert client.request("ping")["ok"] is True
    assert daemon.request("ping")["ok"] is True


def test_every_malformed_line_gets_its_error_and_the_connection_stays_usable(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    client.send_raw(b"".join(line + b"\n" for line, _, _ in BAD_LINES))
    responses = client.read_responses(len(BAD_LINES))
    got = [
        (line, r["error"], frag in r["message"])
        for (line, _, frag), r in zip(BAD_LINES, responses, strict=True)
    ]
    expected = [(line, code, True) for line, code, _ in BAD_LINES]
    assert got == expected
    assert all(r["ok"] is False and isinstance(r["message"], str) for r in responses)
    _assert_served(daemon, client)
    # Nothing above was granted, created or consumed.
    assert set(daemon.request("status")["providers"]) == {"p", "keys"}
    assert daemon.bucket_status("p")["granted"] == 0
    assert client.request("acquire", provider="p", cost=10, timeout=0)["ok"] is True


def test_an_error_echoes_the_request_id_when_it_has_one(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    client.send(
        {"op": "acquire", "provider": "p", "cost": -1, "id": "with-id"},
        {"op": "nope", "id": 41},
        {"op": "acquire", "provider": "p", "cost": 99, "id": 42},
    )
    first, second, third = client.read_responses(3)
    assert (first["id"], first["error"]) == ("with-id", "bad_request")
    assert (second["id"], second["error"]) == (41, "unknown_op")
    assert (third["id"], third["error"]) == (42, "cost_too_large")


def test_blank_lines_are_ignored(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    client.send_raw(b'\n\n   \n\t\n\r\n{"op":"ping","id":"after-blanks"}\n')
    assert client.read_response() == {"id": "after-blanks", "ok": True}
    assert not client.has_response()


def test_line_too_long_gets_an_error_then_the_connection_closes(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("[server]\nmax_line_bytes = 1024\n")
    other = daemon.client()
    client = daemon.client()
    # A line of exactly max_line_bytes is fine.
    exact = b'{"op":"ping","id":"exact"' + b" " * (1024 - 26) + b"}"
    assert len(exact) == 1024
    client.send_raw(exact + b"\n")
    assert client.read_response() == {"id": "exact", "ok": True}
    # What came before the long line on the same write is still answered.
    client.send_raw(b'{"op":"ping","id":"before"}\n{"op":"ping","pad":"' + b"x" * 2000 + b'"}\n')
    assert client.read_response() == {"id": "before", "ok": True}
    error = client.read_response()
    assert error["ok"] is False
    assert error["error"] == "line_too_long"
    assert "1024" in error["message"]
    assert client.expect_closed() == b""
    _assert_served(daemon, other)


def test_line_too_long_without_a_newline_closes_too(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("[server]\nmax_line_bytes = 1024\n")
    client = daemon.client()
    client.send_raw(b'{"op":"ping","pad":"' + b"y" * 1500)  # no newline: still too long
    assert client.read_response()["error"] == "line_too_long"
    client.expect_closed()
    _assert_served(daemon)


def test_half_a_line_then_a_stall_does_not_hold_up_anyone(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    staller = daemon.client()
    staller.send_raw(b'{"op":"ping","id":"sta')
    others = [daemon.client() for _ in range(3)]
    for other in others:
        assert other.request("acquire", provider="p")["ok"] is True
    assert not staller.has_response()
    staller.send_raw(b'lled"}\n')  # the rest of the line, later: the connection still works
    assert staller.read_response() == {"id": "stalled", "ok": True}
    _assert_served(daemon, staller)


def test_unknown_provider_when_providers_are_not_created_on_demand(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(
        """
        [server]
        create_providers = false

        [providers.known]
        rate = "10/second"
        """
    )
    client = daemon.client()
    for op, fields in [
        ("acquire", {}),
        ("report", {"status": 200}),
        ("status", {}),
        ("reset", {}),
    ]:
        reply = client.request(op, provider="stranger", **fields)
        assert reply["error"] == "unknown_provider", (op, reply)
        assert "stranger" in reply["message"]
    assert client.request("acquire", provider="known")["ok"] is True
    assert set(client.request("status")["providers"]) == {"known"}
    _assert_served(daemon, client)


def test_too_many_providers(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(
        """
        [server]
        max_providers = 2

        [providers.configured]
        rate = "10/second"
        """
    )
    client = daemon.client()
    assert client.request("acquire", provider="first-new")["ok"] is True
    refused = client.request("acquire", provider="second-new")
    assert refused["error"] == "too_many_providers"
    assert "max_providers" in refused["message"]
    assert client.request("report", provider="third-new", status=200)["error"] == "too_many_providers"
    # Existing providers, configured or created, keep working.
    assert client.request("acquire", provider="first-new")["ok"] is True
    assert client.request("acquire", provider="configured")["ok"] is True
    assert set(client.request("status")["providers"]) == {"configured", "first-new"}


def test_all_buckets_exhausted_names_a_reason_per_bucket(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG)
    client = daemon.client()
    refused = client.request("acquire", provider="keys", exclude=["a", "b"])
    assert refused["ok"] is False
    assert refused["error"] == "all_buckets_exhausted"
    assert refused["reasons"] == {"a": "excluded", "b": "excluded"}
    single = client.request("acquire", provider="p", exclude=["default"])
    assert single["error"] == "all_buckets_exhausted"
    assert single["reasons"] == {"default": "excluded"}
    # Excluding a bucket name the provider does not have changes nothing.
    assert client.request("acquire", provider="keys", exclude=["zzz"])["ok"] is True
    _assert_served(daemon, client)


def test_max_waiters_answers_timeout_at_once(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(
        """
        [server]
        max_waiters = 3

        [providers.slow]
        rate = "1/second"
        burst = 1
        """
    )
    client = daemon.client()
    assert client.request("acquire", provider="slow")["ok"] is True
    waiting = [client.submit("acquire", provider="slow", timeout=60) for _ in range(3)]
    refused = client.request("acquire", provider="slow", timeout=60)
    assert refused["error"] == "timeout"
    assert "max_waiters" in refused["message"]
    assert refused["retry_after"] > 0
    assert daemon.bucket_status("slow")["waiters"] == 3
    client.close()  # the three waiting ones are cancelled
    wait_for(lambda: daemon.bucket_status("slow")["waiters"] == 0, what="waiters cancelled")
    assert len(waiting) == 3


def test_a_dropped_client_with_thousands_of_waiters_consumes_nothing(daemon_factory: DaemonFactory) -> None:
    waiters = 3000
    daemon = daemon_factory(
        """
        [server]
        max_timeout = 1000000.0

        [defaults]
        rate = "1/second"
        burst = 3600
        """
    )
    observer = daemon.client()

    def waiting(provider: str) -> int:
        reply = observer.request("status", provider=provider)
        count: int = reply["providers"][provider]["buckets"]["default"]["waiters"]
        return count

    def flood_and_drop(provider: str) -> None:
        dropper = daemon.client()
        # 600 units left; the head wants a full burst (3000 s away) and blocks everyone behind it.
        assert dropper.request("acquire", provider=provider, cost=3000, timeout=0)["ok"] is True
        dropper.send({"op": "acquire", "provider": provider, "cost": 3600, "timeout": 1e6, "id": "head"})
        dropper.send(
            *({"op": "acquire", "provider": provider, "timeout": 1e6, "id": i} for i in range(waiters - 1))
        )
        behind = daemon.client()
        rid = behind.submit("acquire", provider=provider, timeout=1e6)
        wait_for(lambda: waiting(provider) == waiters + 1, timeout=10, what="every acquire queued")
        assert not behind.has_response()  # FIFO: it waits behind the dropper's head
        dropper.close()
        granted = behind.response(rid)  # served at once, not in 3000 s
        assert granted["ok"] is True, granted
        assert granted["waited"] < 60
        assert waiting(provider) == 0
        # The dropped ones took nothing: 600 - 1 units are still there, plus what refilled.
        left = observer.request("acquire", provider=provider, cost=599, timeout=0)
        assert left["ok"] is True, left
        assert daemon.bucket_status(provider)["granted"] == 3
        behind.close()

    flood_and_drop("warm-up")  # the allocator's arenas grow once
    before = daemon.rss_kib()
    peak = before
    for round_ in range(3):
        flood_and_drop(f"round{round_}")
        peak = max(peak, daemon.rss_kib())
    after = daemon.rss_kib()
    # Three more rounds of 3000 waiters leave the daemon where one round left it (margin 2 MiB:
    # a leak of more than ~230 bytes per dropped waiter would show).
    assert after - before < 2048, (before, peak, after)
    _assert_served(daemon, observer)


def _refused(sock_path: object) -> bool:
    """True when a new connection is closed by the daemon without an answer."""
    try:
        with NdjsonClient.connect(str(sock_path), timeout=5) as extra:
            extra.send({"op": "ping", "id": 1})
            extra.read_response()
    except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
        return True
    return False


def test_a_flood_of_connections_beyond_max_connections(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("[server]\nmax_connections = 5\n")
    kept = [daemon.client() for _ in range(5)]
    for client in kept:
        assert client.request("ping")["ok"] is True
    flood = []
    for _ in range(50):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket_path))
        flood.append(NdjsonClient(sock))
    for extra in flood:
        extra.sock.settimeout(5)
        assert extra.expect_closed() == b""
        extra.close()
    assert _refused(daemon.socket_path)
    for client in kept:  # the existing ones keep working
        assert client.request("acquire", provider="p")["ok"] is True
    kept.pop().close()
    kept.pop().close()
    # Room again: new connections are served once the daemon has seen the two go.
    wait_for(lambda: not _refused(daemon.socket_path), what="a new connection served")
    fresh = daemon.client()
    assert fresh.request("ping")["ok"] is True
    for client in kept:
        assert client.request("ping")["ok"] is True
