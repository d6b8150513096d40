"""Python clients of the daemon: `AsyncClient` (asyncio) and `Client` (blocking).

    async with AsyncClient() as client:
        async with client.permit("openai", cost={"requests": 1, "tokens": 1200}) as permit:
            response = await call_the_api()
        await client.report_for(permit, response.status, headers=response.headers)

One pipelined Unix-socket connection serves every task of the client: each
request carries an integer `id` and a reader callback matches the responses,
which may come back in any order (protocol.md, Transport). A broken connection
fails the requests in flight with `ConnectionLost`; the next call reconnects.
When the daemon cannot be reached, `fallback="raise"` raises `DaemonUnavailable`
and `fallback="local"` limits each provider in this process at `fallback_rate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final, cast

import orjson
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ratelimitd.client_errors import (
    AllBucketsExhausted,
    BadRequest,
    ConnectionLost,
    CostTooLarge,
    DaemonUnavailable,
    InternalError,
    InvalidJson,
    LineTooLong,
    PermitTimeout,
    RatelimitdClientError,
    ShuttingDown,
    TooManyProviders,
    UnknownOp,
    UnknownProvider,
    error_for,
    error_from_response,
)
from ratelimitd.client_sync import Client
from ratelimitd.client_types import (
    LOCAL_FALLBACK_BUCKET,
    Cost,
    Fallback,
    Permit,
    ReportResult,
    Status,
    acquire_body,
    check_response,
    encode_line,
    permit_from_response,
    report_body,
    report_result_from_response,
    requests_in,
)
from ratelimitd.errors import ErrorCode
from ratelimitd.paths import default_socket_path

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping
    from pathlib import Path

__all__ = (
    "LOCAL_FALLBACK_BUCKET",
    "AllBucketsExhausted",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ConnectionLost",
    "CostTooLarge",
    "DaemonUnavailable",
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
    "error_for",
    "local_limiter",
)

logger = logging.getLogger(__name__)

#: While falling back locally, how often to try the daemon again (seconds).
FALLBACK_PROBE_INTERVAL: Final = 1.0


def local_limiter(rate_per_second: float) -> AsyncLimiter:
    """The local fallback limiter: `rate_per_second`, with a burst of one second's worth.

    aiolimiter cannot take more than its capacity at once, so a rate below one
    permit per second becomes one permit per `1 / rate` seconds.
    """
    if rate_per_second >= 1.0:
        return AsyncLimiter(rate_per_second, 1.0)
    return AsyncLimiter(1.0, 1.0 / rate_per_second)


class _Connection(asyncio.Protocol):
    """One socket: writes whole lines, hands each response line to the future of its id."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.transport: asyncio.Transport | None = None
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

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class AsyncClient:
    """A client for one daemon socket, shared by every task of an event loop.

    :param socket_path: the daemon's socket; default from `$RATELIMITD_SOCKET` and
        the rest of protocol.md "Paths".
    :param fallback: `"raise"` raises `DaemonUnavailable` when the daemon cannot be
        reached; `"local"` grants permits from a per-provider local limiter at
        `fallback_rate` permits per second instead (warning logged once per outage).
    :param connect_timeout: seconds allowed for one connection attempt.
    :param default_timeout: the `timeout` sent with an acquire that gives none
        (None: the daemon's own `default_timeout`).
    :param connect_attempts: attempts per connection, with a short exponential backoff.
    :param fallback_probe_interval: while limiting locally, seconds between attempts to
        reach the daemon again (one attempt each, no backoff).
    """

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        fallback: Fallback = "raise",
        fallback_rate: float = 1.0,
        connect_timeout: float = 1.0,
        default_timeout: float | None = None,
        connect_attempts: int = 3,
        fallback_probe_interval: float = FALLBACK_PROBE_INTERVAL,
    ) -> None:
        if fallback not in ("raise", "local"):
            raise ValueError(f"fallback: must be 'raise' or 'local', got {fallback!r}")
        if not fallback_rate > 0:
            raise ValueError(f"fallback_rate: must be > 0 permits per second, got {fallback_rate!r}")
        path = socket_path if socket_path is not None else default_socket_path(os.environ)
        self.socket_path = str(path)
        self.fallback: Fallback = fallback
        self.fallback_rate = float(fallback_rate)
        self.connect_timeout = connect_timeout
        self.default_timeout = default_timeout
        self.connect_attempts = max(1, connect_attempts)
        self.fallback_probe_interval = fallback_probe_interval
        self._connection: _Connection | None = None
        #: Connections opened so far (1 + the number of reconnects).
        self.connections_made = 0
        self._connect_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._local: dict[str, AsyncLimiter] = {}
        self._in_fallback = False
        self._next_probe = 0.0  # monotonic time of the next connection attempt in fallback

    async def __aenter__(self) -> AsyncClient:
        try:
            await self._connect()
        except DaemonUnavailable:
            if self.fallback == "raise":
                raise
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
            if self._in_fallback and time.monotonic() < self._next_probe:
                raise DaemonUnavailable(self.socket_path, "still unreachable (falling back locally)")
            # While falling back, probe once per interval instead of backing off on every call.
            attempts = 1 if self._in_fallback else self.connect_attempts
            retrying = AsyncRetrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=0.02, max=0.25),
                retry=retry_if_exception_type(OSError),
                reraise=True,
            )
            try:
                opened: _Connection = await retrying(self._open_connection)
            except OSError as exc:
                self._next_probe = time.monotonic() + self.fallback_probe_interval
                raise DaemonUnavailable(self.socket_path, str(exc) or type(exc).__name__) from exc
            if self._in_fallback:
                self._in_fallback = False
                logger.info("ratelimitd is reachable again at %s", self.socket_path)
            self._connection = opened
            self.connections_made += 1
            return opened

    async def _open_connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, connection = await loop.create_unix_connection(
                lambda: _Connection(self.socket_path), self.socket_path
            )
        return connection

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request (its `id` is set here) and return the `ok` response.

        :raises RatelimitdClientError: (a subclass per code) for an error response.
        :raises DaemonUnavailable: the daemon cannot be reached.
        :raises ConnectionLost: the connection broke before the answer came.
        """
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        rid = next(self._ids)
        body["id"] = rid
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        connection.pending[rid] = future
        assert connection.transport is not None
        connection.transport.write(encode_line(body))
        try:
            if connection.paused:
                await connection.drain()
            response = await future
        finally:
            # A caller that gave up (cancelled) leaves no entry; a late answer is dropped.
            connection.pending.pop(rid, None)
        return check_response(response)

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
        if timeout is None:
            timeout = self.default_timeout
        body = acquire_body(provider, cost, timeout, exclude)
        try:
            response = await self.request(body)
        except ConnectionLost:
            raise
        except DaemonUnavailable as exc:
            if self.fallback == "raise":
                raise
            return await self._acquire_locally(provider, cost, timeout, exc)
        return permit_from_response(provider, response)

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
        reason: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ReportResult:
        """Tell the daemon how a call went (an HTTP status or `"network_error"`).

        With `fallback="local"`, a report that cannot reach the daemon (or is about a
        local permit) is dropped and the result's `action` is `"dropped"`.
        """
        if bucket == LOCAL_FALLBACK_BUCKET:
            return self._dropped(provider, bucket, "the permit was granted locally")
        body = report_body(
            provider,
            status,
            bucket=bucket,
            permit=permit,
            reason=reason,
            retry_after=retry_after,
            headers=headers,
        )
        try:
            response = await self.request(body)
        except DaemonUnavailable as exc:
            if self.fallback == "raise":
                raise
            return self._dropped(provider, bucket, exc.reason)
        return report_result_from_response(provider, bucket, response)

    async def report_for(
        self,
        permit: Permit,
        status: Status,
        *,
        reason: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ReportResult:
        """`report` for the call made under `permit` (its provider, bucket and id echoed)."""
        return await self.report(
            permit.provider,
            status,
            bucket=permit.bucket,
            permit=permit.permit,
            reason=reason,
            retry_after=retry_after,
            headers=headers,
        )

    async def status(self, provider: str | None = None) -> dict[str, Any]:
        """Every provider's state (or one's): the `providers` object of the `status` op."""
        body: dict[str, Any] = {"op": "status"}
        if provider is not None:
            body["provider"] = provider
        response = await self.request(body)
        providers = response.get("providers")
        return providers if isinstance(providers, dict) else {}

    async def reset(self, provider: str, bucket: str | None = None) -> dict[str, Any]:
        """Forget what was learned about `provider` (or one bucket); returns the response."""
        body: dict[str, Any] = {"op": "reset", "provider": provider}
        if bucket is not None:
            body["bucket"] = bucket
        return _strip(await self.request(body))

    async def hello(self) -> dict[str, Any]:
        """The daemon's `server`, `version`, `protocol` and `features`."""
        return _strip(await self.request({"op": "hello"}))

    async def ping(self) -> float:
        """Round-trip time to the daemon, in seconds."""
        started = time.perf_counter()
        await self.request({"op": "ping"})
        return time.perf_counter() - started

    # -- local fallback -------------------------------------------------------------------------

    def local_limiter(self, provider: str) -> AsyncLimiter | None:
        """The fallback limiter of `provider`, once one was needed (for inspection)."""
        return self._local.get(provider)

    async def _acquire_locally(
        self,
        provider: str,
        cost: Cost,
        timeout: float | None,  # noqa: ASYNC109
        cause: DaemonUnavailable,
    ) -> Permit:
        if not self._in_fallback:
            self._in_fallback = True
            logger.warning(
                "ratelimitd is unreachable (%s); limiting locally at %g permits/s per provider "
                "until it is back",
                cause.reason,
                self.fallback_rate,
            )
        limiter = self._local.get(provider)
        if limiter is None:
            limiter = self._local[provider] = local_limiter(self.fallback_rate)
        amount = min(requests_in(cost), limiter.max_rate)
        loop = asyncio.get_running_loop()
        started = loop.time()
        if timeout is not None and not limiter.has_capacity(amount):
            try:
                async with asyncio.timeout(timeout):
                    await limiter.acquire(amount)
            except TimeoutError:
                retry_after = amount / self.fallback_rate
                raise PermitTimeout(
                    ErrorCode.TIMEOUT,
                    f"no local permit within the timeout; retry in about {retry_after:.3f} s",
                    {"retry_after": retry_after, "local": True},
                ) from None
        else:
            await limiter.acquire(amount)
        return Permit(provider, LOCAL_FALLBACK_BUCKET, None, loop.time() - started, self.fallback_rate)

    @staticmethod
    def _dropped(provider: str, bucket: str, why: str) -> ReportResult:
        logger.debug("report for %s/%s dropped: %s", provider, bucket, why)
        return ReportResult(provider, bucket, None, 0, "dropped")


def _strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k not in ("id", "ok")}
