"""NDJSON over a Unix stream socket: framing, limits, pipelining, one error boundary.

Shell: an asyncio.Protocol per connection. Each complete line is parsed and run
at once; an acquire that must wait answers later from its future's callback, so
responses go out in completion order, matched by `id` (protocol.md, Transport).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter, deque
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.peers import Peer
from ratelimitd.core.protocol import decode, encode, encode_error, parse_object, request_id
from ratelimitd.daemon.peercred import peer_of
from ratelimitd.daemon.service import PendingAcquire, Service
from ratelimitd.daemon.status import StatusSlices

if TYPE_CHECKING:
    import socket

__all__ = ("MAX_PENDING_BYTES", "OPS", "SAMPLE_EVERY", "Connection", "UnixServer")

logger = logging.getLogger(__name__)
# Final: compiled (tools/compiled.py), a module constant is a C static, not a dict lookup.
_OPEN_BRACE: Final = ord("{")
_APPEND_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_loads: Final = orjson.loads
_dumps: Final = orjson.dumps
# Answers one connection may have built but not yet handed to the kernel. Past it, the
# lines already read wait (reading paused) until the transport drains: a pipelined burst
# of requests never builds more than about one answer ahead of what the client reads.
MAX_PENDING_BYTES: Final = 256 * 1024
# When the kernel cannot say who connected: trusted nowhere, limited like one user.
_UNKNOWN_PEER: Final = Peer(pid=0, uid=-1, gid=-1)
# SO_PEERCRED is Linux's. Elsewhere every client that can open the socket is trusted.
PEERCRED: Final = sys.platform.startswith("linux")
SAMPLE_EVERY: Final = 16  # request lines per timed one (the per-op latency histogram is sampled)
OPS: Final = frozenset({"hello", "ping", "acquire", "report", "status", "reset"})


class Connection(asyncio.Protocol):
    """One client: reads lines, answers each, keeps its waiting acquires to cancel on close."""

    def __init__(self, server: UnixServer) -> None:
        self._server = server
        self._service = server.service
        self._max_timeout = server.max_timeout
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._pending: set[PendingAcquire] = set()
        # Responses batched within one data_received. A bytearray, not a list of bytes:
        # each encoded answer is copied in and freed at once, which measured 2x faster
        # per pipelined acquire than keeping 1,000 orjson buffers alive until a join.
        self._out: bytearray | None = None
        self._closing = False
        # A status of many providers goes out in slices (ratelimitd.daemon.status); answers
        # made meanwhile would land inside its line, so they wait in `_held`.
        self._slices: deque[StatusSlices] = deque()
        self._held: bytearray | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._slice_writer: asyncio.Task[None] | None = None
        # Complete lines left unanswered in `_buffer` because the answers before them are
        # still pending (MAX_PENDING_BYTES, or a status being sliced); reading is paused.
        self._backlogged = False
        self.peer = _UNKNOWN_PEER
        self._untrusted: Peer | None = None  # the peer, unless trusted everywhere (fast path)
        self._counted = False  # in the server's per-uid counts
        self.active = True  # read or answered since the last idle sweep
        self._idle_sweeps = 0

    # -- asyncio callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast("asyncio.Transport", transport)
        server = self._server
        if len(server.connections) >= server.max_connections:
            server.refuse(self._transport, "max_connections")
            return
        if not PEERCRED:  # logged once at start: connecting is the only check
            server.connections.add(self)
            self._service.connected_clients += 1
            return
        try:
            self.peer = peer_of(transport.get_extra_info("socket"))
        except (OSError, AttributeError, TypeError):
            logger.warning(
                "cannot read the peer credentials of a connection; treating it as untrusted",
                extra={"event": "peercred_failed"},
            )
        if server.per_uid[self.peer.uid] >= server.max_connections_per_uid:
            server.refuse(self._transport, "max_connections_per_uid", self.peer)
            return
        server.per_uid[self.peer.uid] += 1
        self._counted = True
        if not self._service.trusted_everywhere(self.peer):
            self._untrusted = self.peer
        server.connections.add(self)
        self._service.connected_clients += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._server.connections:
            self._server.connections.discard(self)
            self._service.connected_clients -= 1
        if self._counted:
            self._counted = False
            per_uid = self._server.per_uid
            per_uid[self.peer.uid] -= 1
            if per_uid[self.peer.uid] <= 0:
                del per_uid[self.peer.uid]
        for pending in list(self._pending):
            self._service.abandon(pending)
        self._pending.clear()
        self._buffer.clear()
        if self._slice_writer is not None:
            self._slice_writer.cancel()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its questions.
        self._writable.clear()
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        if self._held is not None:
            return  # the status writer goes on, and reads again when its line is done
        if self._backlogged:
            self._continue()
        elif self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.active = True
        buffer = self._buffer
        if buffer:
            buffer += data
            if self._backlogged:
                return  # a read that raced the pause: it waits behind the backlog
            data = bytes(buffer)
            buffer.clear()
        elif (
            data.find(b"\n") == len(data) - 1
            and self._held is None
            and len(data) <= self._server.max_line_bytes
        ):
            # One whole line: how a client that waits for each answer talks. Its answer
            # goes straight to the transport, with no batch to split, bound or join.
            self._take_line(data)  # its newline is JSON whitespace: no slice to copy
            return
        self._take_lines(data)

    def _take_line(self, line: bytes) -> None:
        server = self._server
        server.until_sample -= 1
        if server.until_sample:
            self._handle_line(line)
        else:  # one line in SAMPLE_EVERY is timed, for the per-op latency histogram
            server.until_sample = SAMPLE_EVERY
            started = time.perf_counter()
            self._handle_line(line)
            server.timed(line, time.perf_counter() - started)

    def _take_lines(self, data: bytes) -> None:
        """Answer the complete lines of `data` until the pending answers pass the bound."""
        # One split for the whole read: cheaper than a find() per line under pipelining.
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: an incomplete line (or b"")
        server = self._server
        limit = server.max_line_bytes
        transport = self._transport
        assert transport is not None
        budget = server.max_pending_bytes - transport.get_write_buffer_size()
        out = bytearray()
        self._out = out
        try:
            for index, line in enumerate(lines):
                if len(line) > limit:
                    self._too_long()
                    return
                self._take_line(line)
                if (len(out) > budget or self._held is not None) and index + 1 < len(lines):
                    # The rest waits, unread beyond this, until these answers are out.
                    self._buffer += b"\n".join(lines[index + 1 :]) + b"\n" + tail
                    self._backlogged = True
                    transport.pause_reading()
                    return
            if len(tail) > limit:
                self._too_long()
                return
            if tail and not self._closing:
                self._buffer += tail
        finally:
            self._out = None
            if out and not transport.is_closing():
                transport.write(bytes(out))
            if self._backlogged and self._writable.is_set() and self._held is None:
                # The kernel took the answers at once: go on after other connections had a turn.
                self._server.loop.call_soon(self._continue)

    def _continue(self) -> None:
        """Answer the lines held back by the bound; read again once they are all answered."""
        transport = self._transport
        if not self._backlogged or self._held is not None or self._closing:
            return
        if transport is None or transport.is_closing():
            return
        self._backlogged = False
        data = bytes(self._buffer)
        self._buffer.clear()
        self._take_lines(data)
        if self._may_read():
            transport.resume_reading()

    def _may_read(self) -> bool:
        """Nothing held back, nothing being sliced, the client reading: take new requests."""
        return not self._backlogged and self._held is None and self._writable.is_set() and not self._closing

    # -- requests -------------------------------------------------------------------------------

    def _send(self, payload: bytes) -> None:
        if self._held is not None:
            self._held += payload
        elif self._out is not None:
            self._out += payload
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.write(payload)

    def _error(self, rid: object, error: RatelimitdError) -> None:
        self._server.count_error(error.code)
        self._send(encode_error(rid if isinstance(rid, str | int) else None, error))

    def _handle_line(self, line: bytes) -> None:
        if not line or (line[0] != _OPEN_BRACE and line.isspace()):
            return  # blank lines are ignored (protocol.md, Limits)
        rid: object = None
        obj: Any = None  # what the line decodes to: any JSON value
        service = self._service
        result: dict[str, Any] | PendingAcquire | StatusSlices
        try:
            try:
                obj = _loads(line)
            except orjson.JSONDecodeError:
                obj = decode(line)  # raises invalid_json with orjson's message
            op = None
            if type(obj) is dict:
                fields: dict[str, Any] = obj  # typed: compiled, `get` is then a direct call
                op = fields.get("op")
            if op == "acquire":
                # Most lines: a call's acquire and its report run from the decoded object itself.
                result = service.acquire_object(obj, self._max_timeout, self._untrusted)
            elif op == "report":
                result = service.report_object(obj, self._untrusted)
            else:
                request = parse_object(obj, max_timeout=self._max_timeout)
                rid = request.id
                result = service.handle(request, self._untrusted)
            if type(result) is dict:
                # Encoded inside the boundary: an answer that cannot be encoded is a bug
                # answered `internal`, not a dropped connection. (`encode`, inlined: a frame
                # less on every answer.)
                self._send(_dumps(result, None, _APPEND_NEWLINE))
                return
        except RatelimitdError as error:
            if rid is None and isinstance(obj, dict):
                rid = request_id(obj)  # echo the id of a request that failed validation
            self._error(rid, error)
            return
        except Exception:
            logger.exception("internal error while handling a request")
            if rid is None and isinstance(obj, dict):
                rid = request_id(obj)
            self._error(rid, RatelimitdError(ErrorCode.INTERNAL, "internal error; the daemon logged it"))
            return
        if isinstance(result, StatusSlices):
            self._write_slices(result)
        else:
            assert isinstance(result, PendingAcquire)
            self._pending.add(result)
            result.waiter.future.add_done_callback(partial(self._finish, result))

    def _finish(self, pending: PendingAcquire, future: asyncio.Future[float]) -> None:
        self._pending.discard(pending)
        self.active = True
        if future.cancelled():
            return  # abandoned: the client is gone
        try:
            self._send(encode(self._service.finish(pending)))
        except RatelimitdError as error:
            self._error(pending.request.id, error)
        except Exception:
            logger.exception("internal error while answering a waiting acquire")
            self._error(
                pending.request.id,
                RatelimitdError(ErrorCode.INTERNAL, "internal error; the daemon logged it"),
            )

    def _write_slices(self, answer: StatusSlices) -> None:
        """Start writing `answer` piece by piece; later answers wait until its line is done."""
        self._slices.append(answer)
        if self._held is not None or self._transport is None:
            return  # the running writer takes it next
        if self._out:  # answers to earlier lines of this read go out first
            self._transport.write(bytes(self._out))
            self._out.clear()
        self._held = bytearray()
        self._transport.pause_reading()  # no new questions while the line is being written
        self._slice_writer = asyncio.get_running_loop().create_task(self._slice_loop())

    async def _slice_loop(self) -> None:
        transport = self._transport
        assert transport is not None
        try:
            while self._slices:
                answer = self._slices.popleft()
                try:
                    for piece in answer:
                        if transport.is_closing():
                            return
                        transport.write(piece)
                        await self._writable.wait()  # the client reads slower than we write
                        await asyncio.sleep(0)  # let every other connection run
                except Exception:
                    # Part of the line is out: no error fits inside it, so the line ends the connection.
                    logger.exception("internal error while writing a status answer; closing the connection")
                    transport.close()
                    return
        finally:
            held, self._held = self._held, None
            self._slice_writer = None
            if not transport.is_closing():
                if held:
                    transport.write(bytes(held))
                if self._closing or not self._writable.is_set():
                    pass  # resume_writing goes on (or the connection is closing)
                elif self._backlogged:
                    self._continue()  # the lines that came after the status
                else:
                    transport.resume_reading()

    def _too_long(self) -> None:
        limit = self._server.max_line_bytes
        self._error(
            None,
            RatelimitdError(ErrorCode.LINE_TOO_LONG, f"a request line is longer than {limit} bytes; closing"),
        )
        self._closing = True
        self._buffer.clear()
        if self._transport is not None:
            if self._out:
                self._transport.write(bytes(self._out))
                self._out.clear()
            self._transport.close()

    def idle_for_two_sweeps(self) -> bool:
        """Called by each idle sweep: True once two sweeps in a row found nothing going on."""
        if self._pending or self.active or self._slice_writer is not None:
            self.active = False
            self._idle_sweeps = 0
            return False
        self._idle_sweeps += 1
        return self._idle_sweeps >= 2

    def has_unsent(self) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        return self._slice_writer is not None or transport.get_write_buffer_size() > 0

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class UnixServer:
    """Accepts connections on a bound Unix socket and tracks them for shutdown."""

    def __init__(
        self,
        service: Service,
        *,
        max_line_bytes: int,
        max_connections: int,
        max_connections_per_uid: int | None = None,
        idle_timeout: float = 0.0,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.service = service
        self.loop = service.loop
        self.max_pending_bytes = max_pending_bytes
        self.max_line_bytes = max_line_bytes
        self.max_timeout = service.config.server.max_timeout
        self.max_connections = max_connections
        self.max_connections_per_uid = max_connections_per_uid or max_connections
        self.idle_timeout = idle_timeout  # 0: never close idle connections
        self.connections: set[Connection] = set()
        self.per_uid: Counter[int] = Counter()  # open connections per peer uid
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.until_sample = SAMPLE_EVERY

    def timed(self, line: bytes, seconds: float) -> None:
        """A sampled line took `seconds` to handle: its op goes to the metrics (bounded label)."""
        try:
            obj = decode(line)
        except RatelimitdError:
            return
        op = obj.get("op") if type(obj) is dict else None
        if op is not None:
            # Any JSON value may stand there (a list is unhashable): only known names are labels.
            self.service.metrics.on_op(op if type(op) is str and op in OPS else "other", seconds)

    def count_error(self, code: ErrorCode) -> None:
        self.service.protocol_errors[code.value] += 1
        self.service.metrics.on_protocol_error(code)

    def refuse(self, transport: asyncio.Transport, reason: str, peer: Peer | None = None) -> None:
        """Close a new connection at once; counted, and logged (a flood as one line with a count)."""
        transport.abort()
        self.service.refused_connections[("socket", reason)] += 1
        limit = self.max_connections if reason == "max_connections" else self.max_connections_per_uid
        who = f" from uid {peer.uid} (pid {peer.pid})" if peer is not None else ""
        logger.warning(
            "refusing a connection%s: %s (%d) reached",
            who,
            reason,
            limit,
            extra={"event": "connection_refused", "reason": reason},
        )

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: Connection(self), sock=sock, backlog=1024)
        if not PEERCRED:
            logger.warning(
                "peer credentials need Linux (SO_PEERCRED): every client that can open the socket "
                "may report and reset, and there is no per-user connection limit"
            )
        if self.idle_timeout > 0:
            self._sweeper = loop.create_task(self._close_idle_forever())

    async def _close_idle_forever(self) -> None:
        # One timer for all connections: each is closed after 2-3 sweeps with nothing
        # read, answered or waiting, i.e. idle for idle_timeout to 1.5 x idle_timeout.
        while True:
            await asyncio.sleep(self.idle_timeout / 2)
            idle = [c for c in self.connections if c.idle_for_two_sweeps()]
            for connection in idle:
                connection.close()
            if idle:
                self.service.idle_closed += len(idle)
                logger.debug("closed %d idle connections", len(idle))

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()

    def close_connections(self) -> None:
        for connection in list(self.connections):
            connection.close()
