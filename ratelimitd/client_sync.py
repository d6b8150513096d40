"""`Client`: the blocking client, one request at a time over a plain socket.

Thread-safe: a lock serializes requests, so threads share one connection (use
`AsyncClient` for many concurrent waits). Same exceptions and fallback as the
async client; the local fallback is a small thread-safe token bucket here,
whose waits happen outside the lock.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import orjson
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ratelimitd.client_errors import ConnectionLost, DaemonUnavailable, PermitTimeout
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
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from pathlib import Path

__all__ = ("Client", "LocalBucket")

logger = logging.getLogger(__name__)

#: While falling back locally, how often to try the daemon again (seconds).
FALLBACK_PROBE_INTERVAL: Final = 1.0
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
                raise PermitTimeout(
                    ErrorCode.TIMEOUT,
                    f"no local permit within the timeout; retry in about {delay:.3f} s",
                    {"retry_after": delay, "local": True},
                )
            self._level += amount
            return delay


class Client:
    """A blocking client; see `AsyncClient` for the parameters.

    :param request_timeout: seconds to wait for any answer other than an acquire's
        (an acquire waits for its own `timeout` plus this).
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
        request_timeout: float = 10.0,
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
        self.request_timeout = request_timeout
        self._sock: socket.socket | None = None
        #: Connections opened so far (1 + the number of reconnects).
        self.connections_made = 0
        self._buffer = b""
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._local: dict[str, LocalBucket] = {}
        self._local_lock = threading.Lock()
        self._in_fallback = False
        self._next_probe = 0.0

    def __enter__(self) -> Client:
        try:
            with self._lock:
                self._connect()
        except DaemonUnavailable:
            if self.fallback == "raise":
                raise
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
            if _alive(self._sock):
                return self._sock
            self._disconnect()  # the daemon went away since the last request: reconnect
        if self._in_fallback and time.monotonic() < self._next_probe:
            raise DaemonUnavailable(self.socket_path, "still unreachable (falling back locally)")
        attempts = 1 if self._in_fallback else self.connect_attempts
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.02, max=0.25),
            retry=retry_if_exception_type(OSError),
            reraise=True,
        )
        try:
            sock = retrying(self._open_socket)
        except OSError as exc:
            self._next_probe = time.monotonic() + self.fallback_probe_interval
            raise DaemonUnavailable(self.socket_path, str(exc) or type(exc).__name__) from exc
        if self._in_fallback:
            self._in_fallback = False
            logger.info("ratelimitd is reachable again at %s", self.socket_path)
        self._sock = sock
        self.connections_made += 1
        return sock

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self.socket_path)
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
            sock = self._connect()
            rid = next(self._ids)
            body["id"] = rid
            try:
                sock.settimeout(wait if wait is not None else self.request_timeout)
                sock.sendall(encode_line(body))
                while True:
                    line = self._read_line(sock)
                    if not line:
                        continue
                    response = orjson.loads(line)
                    # Skip answers to requests abandoned earlier (an interrupted acquire).
                    if isinstance(response, dict) and response.get("id") in (rid, None):
                        break
            except (OSError, orjson.JSONDecodeError) as exc:
                self._disconnect()
                raise ConnectionLost(self.socket_path, str(exc) or type(exc).__name__) from exc
            if response.get("error") == ErrorCode.LINE_TOO_LONG:
                self._disconnect()  # the daemon closes it after this error
        return check_response(response)

    # -- ops ------------------------------------------------------------------------------------

    def acquire(
        self,
        provider: str,
        cost: Cost = 1,
        timeout: float | None = None,
        exclude: Iterable[str] = (),
    ) -> Permit:
        """Block until a permit to call `provider` once; see `AsyncClient.acquire`."""
        if timeout is None:
            timeout = self.default_timeout
        body = acquire_body(provider, cost, timeout, exclude)
        wait = None if timeout is None else timeout + self.request_timeout
        try:
            response = self.request(body, wait)
        except ConnectionLost:
            raise
        except DaemonUnavailable as exc:
            if self.fallback == "raise":
                raise
            return self._acquire_locally(provider, cost, timeout, exc)
        return permit_from_response(provider, response)

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
        reason: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ReportResult:
        """Tell the daemon how a call went; see `AsyncClient.report`."""
        if bucket == LOCAL_FALLBACK_BUCKET:
            return _dropped(provider, bucket, "the permit was granted locally")
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
            response = self.request(body)
        except DaemonUnavailable as exc:
            if self.fallback == "raise":
                raise
            return _dropped(provider, bucket, exc.reason)
        return report_result_from_response(provider, bucket, response)

    def report_for(
        self,
        permit: Permit,
        status: Status,
        *,
        reason: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ReportResult:
        """`report` for the call made under `permit` (its provider, bucket and id echoed)."""
        return self.report(
            permit.provider,
            status,
            bucket=permit.bucket,
            permit=permit.permit,
            reason=reason,
            retry_after=retry_after,
            headers=headers,
        )

    def status(self, provider: str | None = None) -> dict[str, Any]:
        """Every provider's state (or one's): the `providers` object of the `status` op."""
        body: dict[str, Any] = {"op": "status"}
        if provider is not None:
            body["provider"] = provider
        providers = self.request(body).get("providers")
        return providers if isinstance(providers, dict) else {}

    def reset(self, provider: str, bucket: str | None = None) -> dict[str, Any]:
        """Forget what was learned about `provider` (or one bucket); returns the response."""
        body: dict[str, Any] = {"op": "reset", "provider": provider}
        if bucket is not None:
            body["bucket"] = bucket
        return _strip(self.request(body))

    def hello(self) -> dict[str, Any]:
        return _strip(self.request({"op": "hello"}))

    def ping(self) -> float:
        """Round-trip time to the daemon, in seconds."""
        started = time.perf_counter()
        self.request({"op": "ping"})
        return time.perf_counter() - started

    # -- local fallback -------------------------------------------------------------------------

    def local_limiter(self, provider: str) -> LocalBucket | None:
        """The fallback bucket of `provider`, once one was needed (for inspection)."""
        return self._local.get(provider)

    def _acquire_locally(
        self, provider: str, cost: Cost, timeout: float | None, cause: DaemonUnavailable
    ) -> Permit:
        with self._local_lock:
            if not self._in_fallback:
                self._in_fallback = True
                logger.warning(
                    "ratelimitd is unreachable (%s); limiting locally at %g permits/s per "
                    "provider until it is back",
                    cause.reason,
                    self.fallback_rate,
                )
            bucket = self._local.get(provider)
            if bucket is None:
                bucket = self._local[provider] = LocalBucket(self.fallback_rate)
        delay = bucket.reserve(requests_in(cost), timeout)
        if delay > 0:
            time.sleep(delay)
        return Permit(provider, LOCAL_FALLBACK_BUCKET, None, delay, self.fallback_rate)


def _alive(sock: socket.socket) -> bool:
    """False when the peer has closed the connection (a restarted daemon), without blocking."""
    try:
        sock.setblocking(False)  # with a timeout set, Python would poll before recv
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _dropped(provider: str, bucket: str, why: str) -> ReportResult:
    logger.debug("report for %s/%s dropped: %s", provider, bucket, why)
    return ReportResult(provider, bucket, None, 0, "dropped")


def _strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k not in ("id", "ok")}
