"""The error boundary: a bug inside an op becomes `internal`, and everything keeps serving.

There is no honest way to make the real daemon's ops fail (a 30,000-request fuzz found
none), so this test runs the real server and service in-process over a real Unix
socket, with one op broken on purpose by a subclass: the boundary under test is the
server's, which must log the exception, answer `internal` with the request's id, and
keep that connection and every other one usable.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from ratelimitd.daemon.clock import SystemClock
from ratelimitd.daemon.config import Config
from ratelimitd.daemon.server import UnixServer
from ratelimitd.daemon.service import PendingAcquire, Response, Service
from ratelimitd.daemon.unix_socket import bind_unix_socket

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from ratelimitd.core.peers import Peer


class BrokenReportService(Service):
    """A service whose `report` has a bug for one provider, and whose waiting grants do too."""

    def report_object(self, obj: dict[str, Any], peer: Peer | None = None) -> Response:
        # The transport's entry for a report line.
        if obj.get("provider") == "buggy":
            raise ZeroDivisionError("a bug in report")
        return super().report_object(obj, peer)

    def finish(self, pending: PendingAcquire) -> Response:
        if pending.request.provider == "buggy":
            raise KeyError("a bug while answering a waiter")
        return super().finish(pending)


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: dict[str, Any]) -> Any:
    writer.write(orjson.dumps(body) + b"\n")
    await writer.drain()
    return orjson.loads(await asyncio.wait_for(reader.readline(), 5))


async def test_a_bug_in_an_op_is_answered_internal_and_the_daemon_keeps_serving(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = short_dir / "internal.sock"
    service = BrokenReportService(Config(), SystemClock(), asyncio.get_running_loop())
    server = UnixServer(service, max_line_bytes=65536, max_connections=16)
    await server.start(bind_unix_socket(path, 0o660).sock)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        other_reader, other_writer = await asyncio.open_unix_connection(str(path))
        with caplog.at_level(logging.ERROR, logger="ratelimitd.daemon.server"):
            answer = await _ask(reader, writer, {"op": "report", "provider": "buggy", "status": 429, "id": 7})
        assert answer["ok"] is False
        assert answer["error"] == "internal"
        assert answer["id"] == 7
        assert "ZeroDivisionError" in caplog.text  # logged with its traceback
        assert service.protocol_errors["internal"] == 1
        # The same connection and another one keep working.
        assert await _ask(reader, writer, {"op": "ping", "id": 8}) == {"id": 8, "ok": True}
        granted = await _ask(other_reader, other_writer, {"op": "acquire", "provider": "fine", "id": 9})
        assert granted["ok"] is True

        # A waiting acquire whose answer hits a bug still gets `internal`, not silence.
        burst = service.config.default_limits[0].burst
        for i in range(int(burst)):
            assert (await _ask(reader, writer, {"op": "acquire", "provider": "buggy", "id": 100 + i}))["ok"]
        waited = await _ask(reader, writer, {"op": "acquire", "provider": "buggy", "id": 200, "timeout": 5})
        assert waited["error"] == "internal"
        assert waited["id"] == 200
        assert await _ask(reader, writer, {"op": "ping", "id": 201}) == {"id": 201, "ok": True}
        for w in (writer, other_writer):
            w.close()
            await w.wait_closed()
    finally:
        server.stop_accepting()
        server.close_connections()


class UnencodableService(Service):
    """A service whose answers for one provider cannot be encoded (an integer past 64 bits)."""

    def report_object(self, obj: dict[str, Any], peer: Peer | None = None) -> Response:
        body = super().report_object(obj, peer)
        if obj.get("provider") == "huge":
            body["rate"] = 1 << 70
        return body

    def finish(self, pending: PendingAcquire) -> Response:
        body = super().finish(pending)
        if pending.request.provider == "huge":
            body["permit"] = 1 << 70
        return body


async def test_an_answer_that_cannot_be_encoded_is_answered_internal(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = short_dir / "encode.sock"
    service = UnencodableService(Config(), SystemClock(), asyncio.get_running_loop())
    server = UnixServer(service, max_line_bytes=65536, max_connections=16)
    await server.start(bind_unix_socket(path, 0o660).sock)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        with caplog.at_level(logging.ERROR, logger="ratelimitd.daemon.server"):
            answer = await _ask(reader, writer, {"op": "report", "provider": "huge", "status": 200, "id": 1})
        assert (answer["ok"], answer["error"], answer["id"]) == (False, "internal", 1)
        assert "Integer exceeds 64-bit range" in caplog.text
        assert await _ask(reader, writer, {"op": "ping", "id": 2}) == {"id": 2, "ok": True}
        burst = service.config.default_limits[0].burst
        for i in range(int(burst)):
            assert (await _ask(reader, writer, {"op": "acquire", "provider": "huge", "id": 10 + i}))["ok"]
        waited = await _ask(reader, writer, {"op": "acquire", "provider": "huge", "id": 99, "timeout": 5})
        assert (waited["error"], waited["id"]) == ("internal", 99)
        assert await _ask(reader, writer, {"op": "ping", "id": 100}) == {"id": 100, "ok": True}
        writer.close()
        await writer.wait_closed()
    finally:
        server.stop_accepting()
        server.close_connections()
