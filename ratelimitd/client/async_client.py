"""Python clients of the daemon: `AsyncClient` (asyncio) and `Client` (blocking).

    async with AsyncClient() as client:
        async with client.permit("openai", cost={"requests": 1, "tokens": 1200}) as permit:
            response = await call_the_api()
        await client.report_for(permit, response.status, headers=response.headers)

One pipelined Unix-socket connection serves every task of the client: each
request carries an integer `id` and a reader callback matches the responses,
which may come back in any order (protocol.md, Transport). A broken connection
fails the requests in flight with `ConnectionLost`; the next call reconnects. The
daemon closes connections idle for its `idle_timeout`: before using a connection
with nothing in flight, the client checks that the daemon has not closed it.
When the daemon cannot be reached, `fallback="raise"` raises `DaemonUnavailable`
and `fallback="local"` limits each provider in this process at `fallback_rate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Unpack, cast

import orjson
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying

from ratelimitd.client.core import ClientCore, local_timeout
from ratelimitd.client.daemon_check import check_daemon, peer_closed
from ratelimitd.client.errors import (
    AllBucketsExhausted,
    BadRequest,
    ConnectionLost,
    CostTooLarge,
    DaemonUnavailable,
    Forbidden,
    InternalError,
    InvalidJson,
    LineTooLong,
    PermitTimeout,
    RatelimitdClientError,
    ShuttingDown,
    TooManyProviders,
    UnknownOp,
    UnknownProvider,
    UntrustedDaemon,
    error_for,
    error_from_response,
)
from ratelimitd.client.sync import Client
from ratelimitd.client.types import (
    LOCAL_FALLBACK_BUCKET,
    Cost,
    Permit,
    ReportResult,
    Status,
    acquire_body,
    check_response,
    providers_from_response,
    report_body,
    report_result_from_response,
    requests_in,
    reset_body,
    status_body,
    without_envelope,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

    from ratelimitd.client.core import ClientOptions
    from ratelimitd.client.types import ReportDetails

__all__ = (
    "LOCAL_FALLBACK_BUCKET",
    "AllBucketsExhausted",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ConnectionLost",
    "CostTooLarge",
    "DaemonUnavailable",
    "Forbidden",
    "InternalError",
    "InvalidJson",
    "LineTooLong",
    "Permit",
    "PermitTimeout",
    "RatelimitdClientError",
    "ReportResult",
    "ShuttingDown",
    "TooManyProviders",
    "UnknownOp",
    "UnknownProvider",
    "UntrustedDaemon",
    "error_for",
    "local_limiter",
)

logger = logging.getLogger(__name__)
# A connection unused this long (seconds) is checked before reuse: the daemon may have
# closed it (idle_timeout). A syscall (~4 µs), so not between back-to-back requests.
_PEEK_AFTER = 0.05


def local_limiter(rate_per_second: float) -> AsyncLimiter:
    """The local fallback limiter: `rate_per_second`, with a burst of one second's worth.

    aiolimiter cannot take more than its capacity at once, so a rate below one
    permit per second becomes one permit per `1 / rate` seconds.
    """
    if rate_per_second >= 1.0:
        return AsyncLimiter(rate_per_second, 1.0)
    return AsyncLimiter(1.0, 1.0 / rate_per_second)


def _answer_dropped(future: asyncio.Future[dict[str, Any]]) -> None:
    """The answer to a report nobody waits for: only an error is worth a (debug) line."""
    if future.cancelled():
        return
    error = future.exception()
    answer = None if error is not None else future.result()
    if error is not None or (answer is not None and answer.get("ok") is not True):
        logger.debug("a report sent without waiting failed: %s", error or answer)


class _Connection(asyncio.Protocol):
    """One socket: writes whole lines, hands each response line to the future of its id."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None  # the connected socket, to peek at
        self.last_used = time.monotonic()  # when the last request on it ended
        self.closed = False
        self._rest = b""
        self._writable: asyncio.Event | None = None  # set while the kernel buffer has room
        self._fatal: RatelimitdClientError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
        *lines, self._rest = data.split(b"\n")
        pending = self.pending
        for line in lines:
            if not line:
                continue
            try:
                response = orjson.loads(line)
                future = pending.pop(response["id"], None)
            except (orjson.JSONDecodeError, TypeError, KeyError):
                response, future = None, None
            if future is None:
                self._unmatched(line, response)
            elif not future.done():
                future.set_result(response)

    def _unmatched(self, line: bytes, response: Any) -> None:
        # An error about a line whose id the daemon could not read; `line_too_long`
        # is followed by the daemon closing the connection (protocol.md, Limits).
        if isinstance(response, dict) and response.get("ok") is False:
            error = error_from_response(response)
            if isinstance(error, LineTooLong):
                self._fatal = error
            logger.debug("response without a pending request: %r", line[:200])
        else:
            logger.debug("unreadable or unexpected response line: %r", line[:200])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(
                    self._fatal or ConnectionLost(self.socket_path, f"connection closed ({exc or 'EOF'})")
                )
        if self._writable is not None:
            self._writable.set()

    @property
    def paused(self) -> bool:
        """True while the transport's write buffer is over its high-water mark."""
        return self._writable is not None and not self._writable.is_set()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.Event()
        self._writable.clear()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()

    async def drain(self) -> None:
        if self._writable is not None and not self._writable.is_set():
            await self._writable.wait()

    def peer_closed(self) -> bool:
        """True when the daemon closed the connection and the loop has not read the EOF yet."""
        return self.sock is not None and not self.closed and peer_closed(self.sock)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True  # the next call reconnects; connection_lost fails what is in flight


class AsyncClient(ClientCore[AsyncLimiter]):
    """A client for one daemon socket, shared by every task of an event loop.

    :param socket_path: the daemon's socket; default from `$RATELIMITD_SOCKET` and
        the rest of protocol.md "Paths".
    :param fallback: `"raise"` (default) raises `DaemonUnavailable` when the daemon cannot
        be reached; `"local"` grants permits from a per-provider local limiter at
        `fallback_rate` (default 1) permits per second instead (warning logged once per outage).
    :param connect_timeout: seconds allowed for one connection attempt (default 1).
    :param default_timeout: the `timeout` sent with an acquire that gives none (default
        None: the daemon's own `default_timeout`).
    :param connect_attempts: attempts per connection, with a short exponential backoff (default 3).
    :param fallback_probe_interval: while limiting locally, seconds between attempts to
        reach the daemon again (one attempt each, no backoff; default 1).
    :param daemon_user: a user (name or uid) trusted to serve the socket besides this
        process's own user and root (default `$RATELIMITD_DAEMON_USER`; the packaged
        units' `ratelimitd` user is trusted when it exists). A socket served by anyone
        else raises `UntrustedDaemon` (a `DaemonUnavailable`) before anything is sent.
    """

    _logger = logger

    def __init__(self, socket_path: str | Path | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(socket_path, **options)
        self._connection: _Connection | None = None
        self._connect_lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        try:
            await self._connect()
        except DaemonUnavailable as exc:
            self._raise_unless_falling_back(exc)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; requests in flight fail with `ConnectionLost`."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            connection.close()
            await asyncio.sleep(0)  # let connection_lost run

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.closed

    # -- connection -----------------------------------------------------------------------------

    async def _connect(self) -> _Connection:
        async with self._connect_lock:
            connection = self._connection
            if connection is not None and not connection.closed:
                return connection
            retrying = self._connect_retrying(AsyncRetrying, time.monotonic())
            try:
                opened: _Connection = await retrying(self._open_connection)
            except OSError as exc:
                raise self._connect_failed(exc, time.monotonic()) from exc
            self._connected()
            self._connection = opened
            return opened

    async def _open_connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            async with asyncio.timeout(self.connect_timeout):
                await loop.sock_connect(sock, self.socket_path)
            check_daemon(sock, self.socket_path, self.trusted_daemon_uids)
            _, connection = await loop.create_unix_connection(
                lambda: _Connection(self.socket_path), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        connection.sock = sock
        return connection

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request (its `id` is set here) and return the `ok` response.

        :raises RatelimitdClientError: (a subclass per code) for an error response.
        :raises DaemonUnavailable: the daemon cannot be reached.
        :raises ConnectionLost: the connection broke before the answer came.
        """
        connection = await self._usable_connection()
        try:
            return check_response(await self._send(connection, body))
        finally:
            connection.last_used = time.monotonic()

    async def _usable_connection(self) -> _Connection:
        """The open connection, or a new one when there is none or the daemon closed it."""
        connection = self._connection
        if (
            connection is not None
            and not connection.pending
            and time.monotonic() - connection.last_used > _PEEK_AFTER
            and connection.peer_closed()
        ):
            connection.close()  # the daemon closed it (idle_timeout) before the loop noticed
        if connection is None or connection.closed:
            connection = await self._connect()
        return connection

    async def _send(self, connection: _Connection, body: dict[str, Any]) -> dict[str, Any]:
        rid, line = self._request_line(body)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        connection.pending[rid] = future
        assert connection.transport is not None
        connection.transport.write(line)
        try:
            if connection.paused:
                await connection.drain()
            return await future
        finally:
            # A caller that gave up (cancelled) leaves no entry; a late answer is dropped.
            connection.pending.pop(rid, None)

    # -- ops ------------------------------------------------------------------------------------

    async def acquire(
        self,
        provider: str,
        cost: Cost = 1,
        timeout: float | None = None,  # noqa: ASYNC109 (the daemon enforces it)
        exclude: Iterable[str] = (),
    ) -> Permit:
        """Wait for a permit to call `provider` once.

        :param cost: a number of `requests`, or units -> amounts, e.g. `{"requests": 1, "tokens": 1200}`.
        :param timeout: seconds the daemon may hold the request; 0 means now or never.
        :param exclude: buckets already tried by this logical request (failover).
        :raises PermitTimeout: no permit in time; `retry_after` estimates when to retry.
        """
        timeout = self._acquire_timeout(timeout)
        body = acquire_body(provider, cost, timeout, exclude)
        try:
            response = await self.request(body)
        except DaemonUnavailable as exc:
            self._raise_unless_falling_back(exc)
            return await self._acquire_locally(provider, cost, timeout, exc)
        return self._permit(provider, response)

    @contextlib.asynccontextmanager
    async def permit(
        self,
        provider: str,
        cost: Cost = 1,
        timeout: float | None = None,  # noqa: ASYNC109
        exclude: Iterable[str] = (),
    ) -> AsyncIterator[Permit]:
        """`async with client.permit("openai") as permit:` acquires, then runs the block.

        The permit is consumed at grant time; leaving the block releases nothing.
        """
        yield await self.acquire(provider, cost, timeout, exclude)

    async def report(
        self,
        provider: str,
        status: Status,
        *,
        bucket: str = "default",
        permit: int | None = None,
        **details: Unpack[ReportDetails],
    ) -> ReportResult:
        """Tell the daemon how a call went (an HTTP status or `"network_error"`).

        `details` are `reason`, `retry_after`, `headers` and `used` (see `ReportDetails`). With
        `fallback="local"`, a report that cannot reach the daemon (or is about a local
        permit) is dropped and the result's `action` is `"dropped"`.
        """
        if bucket == LOCAL_FALLBACK_BUCKET:
            return self._drop_report(provider, bucket, "the permit was granted locally")
        body = report_body(provider, status, bucket=bucket, permit=permit, **details)
        try:
            response = await self.request(body)
        except DaemonUnavailable as exc:
            return self._drop_report(provider, bucket, exc)
        return report_result_from_response(provider, bucket, response)

    async def report_for(
        self,
        permit: Permit,
        status: Status,
        **details: Unpack[ReportDetails],
    ) -> ReportResult:
        """`report` for the call made under `permit` (its provider, bucket and id echoed)."""
        return await self.report(
            permit.provider, status, bucket=permit.bucket, permit=permit.permit, **details
        )

    async def report_soon(self, permit: Permit, status: Status, **details: Unpack[ReportDetails]) -> None:
        """`report_for` without waiting for the answer, which is dropped when it comes.

        For integrations that never read the result: one round trip less per call. An
        error answer is only logged (debug); a daemon that cannot be reached is handled
        as `report`.
        """
        if permit.local:
            return
        body = report_body(permit.provider, status, bucket=permit.bucket, permit=permit.permit, **details)
        try:
            connection = await self._usable_connection()
        except DaemonUnavailable as exc:
            self._drop_report(permit.provider, permit.bucket, exc)
            return
        connection.last_used = time.monotonic()
        rid, line = self._request_line(body)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_answer_dropped)
        connection.pending[rid] = future
        assert connection.transport is not None
        connection.transport.write(line)

    async def status(self, provider: str | None = None) -> dict[str, Any]:
        """Every provider's state (or one's): the `providers` object of the `status` op."""
        return providers_from_response(await self.request(status_body(provider)))

    async def reset(self, provider: str, bucket: str | None = None) -> dict[str, Any]:
        """Forget what was learned about `provider` (or one bucket); returns the response."""
        return without_envelope(await self.request(reset_body(provider, bucket)))

    async def hello(self) -> dict[str, Any]:
        """The daemon's `server`, `version`, `protocol` and `features`."""
        return without_envelope(await self.request({"op": "hello"}))

    async def ping(self) -> float:
        """Round-trip time to the daemon, in seconds."""
        started = time.perf_counter()
        await self.request({"op": "ping"})
        return time.perf_counter() - started

    # -- local fallback -------------------------------------------------------------------------

    def _new_local_limiter(self) -> AsyncLimiter:
        return local_limiter(self.fallback_rate)

    async def _acquire_locally(
        self,
        provider: str,
        cost: Cost,
        timeout: float | None,  # noqa: ASYNC109
        cause: DaemonUnavailable,
    ) -> Permit:
        limiter = self._local_limiter_for(provider, cause)
        amount = min(requests_in(cost), limiter.max_rate)
        loop = asyncio.get_running_loop()
        started = loop.time()
        if timeout is not None and not limiter.has_capacity(amount):
            try:
                async with asyncio.timeout(timeout):
                    await limiter.acquire(amount)
            except TimeoutError:
                raise local_timeout(amount / self.fallback_rate) from None
        else:
            await limiter.acquire(amount)
        return self._local_permit(provider, loop.time() - started)
