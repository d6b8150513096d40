"""A status of many providers against a real daemon: one intact line, written in slices.

While it is written, other connections are served, and answers to requests pipelined
behind it on the same connection come after its line, never inside it. Order and
content are asserted, not durations.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from daemons import DaemonFactory

PROVIDERS = 1500


def _config(count: int) -> str:
    head = f"[server]\nmax_providers = {count + 10}\n"
    return head + "".join(f'[providers.p{i:04d}]\nrate = "5/second"\n' for i in range(count))


def _lines(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(1 << 20)
        assert chunk, "the daemon closed the connection"
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_a_status_that_is_not_read_holds_back_nobody_else(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(_config(PROVIDERS), http=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(str(daemon.socket_path))
        # A status (about 1 MB), then requests behind it; nothing is read for now.
        slow.sendall(
            b'{"op":"status","id":"s"}\n{"op":"ping","id":1}\n'
            b'{"op":"acquire","provider":"p0001","id":2}\n{"op":"ping","id":3}\n'
        )
        last = f"p{PROVIDERS - 1:04d}"
        with daemon.client() as other:  # served while that answer waits for its reader
            for _ in range(3):
                assert other.request("acquire", provider=last)["ok"]
            assert (
                other.request("status", provider=last)["providers"][last]["buckets"]["default"]["granted"]
                == 3
            )
        slow.settimeout(10.0)
        answers = _lines(slow, 4)
    assert answers[0]["id"] == "s"
    assert len(answers[0]["providers"]) == PROVIDERS
    # The last slice was built once the reader caught up, after those acquires.
    assert answers[0]["providers"][last]["buckets"]["default"]["granted"] == 3
    assert sorted(a["id"] for a in answers[1:]) == [1, 2, 3]
    assert all(a["ok"] for a in answers)

    # The same answers over HTTP, whole and by pages, with and without history.
    base = f"http://127.0.0.1:{daemon.http_port}/v1/status"
    with urllib.request.urlopen(base, timeout=10) as response:
        whole = json.load(response)
    assert "id" not in whole
    assert len(whole["providers"]) == PROVIDERS
    with urllib.request.urlopen(f"{base}?limit=2&after=p0005&history=false", timeout=10) as response:
        page = json.load(response)
    assert list(page["providers"]) == ["p0006", "p0007"]
    assert page["next"] == "p0007"
    assert "history" not in page["providers"]["p0006"]["buckets"]["default"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}?limit=0", timeout=10)
    assert refused.value.code == 400
    assert json.load(refused.value)["error"] == "bad_request"
