"""`Client`: the blocking client, one request at a time over a plain socket.

Thread-safe: a lock serializes requests, so threads share one connection (use
`AsyncClient` for many concurrent waits). Same exceptions and fallback as the
async client; the local fallback is a small thread-safe token bucket here,
whose waits happen outside the lock.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Unpack

import orjson
from tenacity import Retrying

from ratelimitd.client.core import ClientCore, local_timeout
from ratelimitd.client.daemon_check import check_daemon, peer_closed
from ratelimitd.client.errors import ConnectionLost, DaemonUnavailable
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
from ratelimitd.core.errors import ErrorCode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    from ratelimitd.client.core import ClientOptions
    from ratelimitd.client.types import ReportDetails

__all__ = ("Client", "LocalBucket")

logger = logging.getLogger(__name__)

_RECV_BYTES: Final = 65536


class LocalBucket:
    """A thread-safe token bucket: `rate` permits per second, burst of one second's worth.

    `reserve` books the permit and returns how long to sleep before using it, so
    waiters are served in arrival order and sleep without holding the lock.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._level = 0.0  # permits booked and not yet drained
        self._last = clock()
        self._lock = threading.Lock()

    def _drain(self, now: float) -> None:
        self._level = max(0.0, self._level - (now - self._last) * self.rate)
        self._last = now

    def level(self) -> float:
        """Permits booked in the last second's window (`capacity` means full)."""
        with self._lock:
            self._drain(self._clock())
            return self._level

    def reserve(self, amount: float, timeout: float | None) -> float:
        """Book `amount` permits; return the delay before they may be used.

        :raises PermitTimeout: the delay would exceed `timeout` (nothing booked).
        """
        amount = min(amount, self.capacity)
        with self._lock:
            self._drain(self._clock())
            delay = max(0.0, (self._level + amount - self.capacity) / self.rate)
            if timeout is not None and delay > timeout:
                raise local_timeout(delay)
            self._level += amount
            return delay


class Client(ClientCore[LocalBucket]):
    """A blocking client; see `AsyncClient` for the parameters.

    :param request_timeout: seconds to wait for any answer other than an acquire's
        (an acquire waits for its own `timeout` plus this).
    """

    _logger = logger

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        request_timeout: float = 10.0,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(socket_path, **options)
        self.request_timeout = request_timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._local_lock = threading.Lock()

    def __enter__(self) -> Client:
        try:
            with self._lock:
                self._connect()
        except DaemonUnavailable as exc:
            self._raise_unless_falling_back(exc)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # -- connection (callers hold self._lock) ---------------------------------------------------

    def _disconnect(self) -> None:
        sock, self._sock, self._buffer = self._sock, None, b""
        if sock is not None:
            sock.close()

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            if not peer_closed(self._sock):
                return self._sock
            self._disconnect()  # the daemon went away since the last request: reconnect
        retrying = self._connect_retrying(Retrying, time.monotonic())
        try:
            sock = retrying(self._open_socket)
        except OSError as exc:
            raise self._connect_failed(exc, time.monotonic()) from exc
        self._connected()
        self._sock = sock
        return sock

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self.socket_path)
            check_daemon(sock, self.socket_path, self.trusted_daemon_uids)
        except OSError:
            sock.close()
            raise
        return sock

    def _read_line(self, sock: socket.socket) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                return line
            chunk = sock.recv(_RECV_BYTES)
            if not chunk:
                raise ConnectionResetError("the daemon closed the connection")
            self._buffer += chunk

    def request(self, body: dict[str, Any], wait: float | None = None) -> dict[str, Any]:
        """Send one request and return the `ok` response; `wait` bounds the answer (seconds).

        :raises RatelimitdClientError: (a subclass per code) for an error response.
        :raises DaemonUnavailable: the daemon cannot be reached.
        :raises ConnectionLost: the connection broke (or went silent) before the answer.
        """
        with self._lock:
            # `_connect` notices a connection the daemon closed (idle_timeout, restart).
            response = self._send(self._connect(), body, wait)
            if response.get("error") == ErrorCode.LINE_TOO_LONG:
                self._disconnect()  # the daemon closes it after this error
        return check_response(response)

    def _send(self, sock: socket.socket, body: dict[str, Any], wait: float | None) -> dict[str, Any]:
        """One request and its answer (callers hold self._lock)."""
        rid, request_line = self._request_line(body)
        try:
            sock.settimeout(wait if wait is not None else self.request_timeout)
            sock.sendall(request_line)
            while True:
                line = self._read_line(sock)
                if not line:
                    continue
                response = orjson.loads(line)
                # Skip answers to requests abandoned earlier (an interrupted acquire).
                if isinstance(response, dict) and response.get("id") in (rid, None):
                    return response
        except (OSError, orjson.JSONDecodeError) as exc:
            self._disconnect()
            raise ConnectionLost(self.socket_path, str(exc) or type(exc).__name__) from exc

    # -- ops ------------------------------------------------------------------------------------

    def acquire(
        self,
        provider: str,
        cost: Cost = 1,
        timeout: float | None = None,
        exclude: Iterable[str] = (),
    ) -> Permit:
        """Block until a permit to call `provider` once; see `AsyncClient.acquire`."""
        timeout = self._acquire_timeout(timeout)
        body = acquire_body(provider, cost, timeout, exclude)
        wait = None if timeout is None else timeout + self.request_timeout
        try:
            response = self.request(body, wait)
        except DaemonUnavailable as exc:
            self._raise_unless_falling_back(exc)
            return self._acquire_locally(provider, cost, timeout, exc)
        return self._permit(provider, response)

    @contextlib.contextmanager
    def permit(
        self,
        provider: str,
        cost: Cost = 1,
        timeout: float | None = None,
        exclude: Iterable[str] = (),
    ) -> Iterator[Permit]:
        """`with client.permit("openai") as permit:` acquires, then runs the block."""
        yield self.acquire(provider, cost, timeout, exclude)

    def report(
        self,
        provider: str,
        status: Status,
        *,
        bucket: str = "default",
        permit: int | None = None,
        **details: Unpack[ReportDetails],
    ) -> ReportResult:
        """Tell the daemon how a call went; see `AsyncClient.report`."""
        if bucket == LOCAL_FALLBACK_BUCKET:
            return self._drop_report(provider, bucket, "the permit was granted locally")
        body = report_body(provider, status, bucket=bucket, permit=permit, **details)
        try:
            response = self.request(body)
        except DaemonUnavailable as exc:
            return self._drop_report(provider, bucket, exc)
        return report_result_from_response(provider, bucket, response)

    def report_for(
        self,
        permit: Permit,
        status: Status,
        **details: Unpack[ReportDetails],
    ) -> ReportResult:
        """`report` for the call made under `permit` (its provider, bucket and id echoed)."""
        return self.report(permit.provider, status, bucket=permit.bucket, permit=permit.permit, **details)

    def report_soon(self, permit: Permit, status: Status, **details: Unpack[ReportDetails]) -> None:
        """`report_for` without waiting for the answer, which the next request skips.

        For integrations that never read the result: one round trip less per call. An
        error answer goes unseen; a daemon that cannot be reached is handled as `report`.
        """
        if permit.local:
            return
        body = report_body(permit.provider, status, bucket=permit.bucket, permit=permit.permit, **details)
        with self._lock:
            try:
                sock = self._connect()
                sock.sendall(self._request_line(body)[1])
            except DaemonUnavailable as exc:
                self._drop_report(permit.provider, permit.bucket, exc)
            except OSError as exc:
                self._disconnect()
                self._drop_report(permit.provider, permit.bucket, ConnectionLost(self.socket_path, str(exc)))

    def status(self, provider: str | None = None) -> dict[str, Any]:
        """Every provider's state (or one's): the `providers` object of the `status` op."""
        return providers_from_response(self.request(status_body(provider)))

    def reset(self, provider: str, bucket: str | None = None) -> dict[str, Any]:
        """Forget what was learned about `provider` (or one bucket); returns the response."""
        return without_envelope(self.request(reset_body(provider, bucket)))

    def hello(self) -> dict[str, Any]:
        """The daemon's `server`, `version`, `protocol` and `features`."""
        return without_envelope(self.request({"op": "hello"}))

    def ping(self) -> float:
        """Round-trip time to the daemon, in seconds."""
        started = time.perf_counter()
        self.request({"op": "ping"})
        return time.perf_counter() - started

    # -- local fallback -------------------------------------------------------------------------

    def _new_local_limiter(self) -> LocalBucket:
        return LocalBucket(self.fallback_rate)

    def _acquire_locally(
        self, provider: str, cost: Cost, timeout: float | None, cause: DaemonUnavailable
    ) -> Permit:
        with self._local_lock:
            bucket = self._local_limiter_for(provider, cause)
        delay = bucket.reserve(requests_in(cost), timeout)
        if delay > 0:
            time.sleep(delay)
        return self._local_permit(provider, delay)
