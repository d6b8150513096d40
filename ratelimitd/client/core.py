"""What the async and blocking clients decide alike, with the I/O left to them.

`ClientCore` checks the arguments both clients take and keeps the state that is
not a connection: request ids, when to try the daemon again while falling back,
one local limiter per provider, the outage logged once. `AsyncClient` adds
asyncio transports, `Client` a blocking socket and locks. No sockets, no
asyncio, no clock (callers pass `now`, monotonic seconds); the environment is
read only for the default socket path and `$RATELIMITD_DAEMON_USER`.
"""

from __future__ import annotations

import itertools
import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypedDict, TypeVar

from tenacity import BaseRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from ratelimitd.client.daemon_check import trusted_daemon_uids
from ratelimitd.client.errors import ConnectionLost, DaemonUnavailable, PermitTimeout, UntrustedDaemon
from ratelimitd.client.types import (
    LOCAL_FALLBACK_BUCKET,
    Fallback,
    Permit,
    ReportResult,
    encode_line,
    permit_from_response,
)
from ratelimitd.core.errors import ErrorCode
from ratelimitd.core.paths import client_socket_path

if TYPE_CHECKING:
    import logging
    from pathlib import Path

__all__ = ("FALLBACK_PROBE_INTERVAL", "ClientCore", "ClientOptions", "local_timeout")

#: While falling back locally, how often to try the daemon again (seconds).
FALLBACK_PROBE_INTERVAL: Final = 1.0

_MAX_WARNED_UNITS: Final = 1024  # (provider, unit) pairs warned about, at most
# Once per process, whatever the number of clients (an integration may open several).
_warned_units: set[tuple[str, str]] = set()

LimiterT = TypeVar("LimiterT")
RetryingT = TypeVar("RetryingT", bound=BaseRetrying)


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of both clients; `AsyncClient` documents them."""

    fallback: Fallback
    fallback_rate: float
    connect_timeout: float
    default_timeout: float | None
    connect_attempts: int
    fallback_probe_interval: float
    daemon_user: str | int | None


def _exists(path: Path) -> bool:
    return os.path.exists(path)


def local_timeout(retry_after: float) -> PermitTimeout:
    """The error of a local fallback limiter that cannot grant in time, worded like the daemon's."""
    return PermitTimeout(
        ErrorCode.TIMEOUT,
        f"no local permit within the timeout; retry in about {retry_after:.3f} s",
        {"retry_after": retry_after, "local": True},
    )


def _worth_retrying(exc: BaseException) -> bool:
    # An untrusted daemon is an answer, not a hiccup: not retried.
    return isinstance(exc, OSError) and not isinstance(exc, UntrustedDaemon)


class ClientCore(ABC, Generic[LimiterT]):
    """The clients' arguments, request ids and fallback decisions; `LimiterT` is the local limiter."""

    #: Each client logs under its own module's name.
    _logger: ClassVar[logging.Logger]

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
        daemon_user: str | int | None = None,
    ) -> None:
        if fallback not in ("raise", "local"):
            raise ValueError(f"fallback: must be 'raise' or 'local', got {fallback!r}")
        if not fallback_rate > 0:
            raise ValueError(f"fallback_rate: must be > 0 permits per second, got {fallback_rate!r}")
        if socket_path is None:
            # The per-user default, or the system daemon's socket when only that one is there.
            socket_path = client_socket_path(os.environ, os.getuid(), _exists)
        self.socket_path = str(socket_path)
        #: Users whose daemon this client talks to (daemon_check.py).
        self.trusted_daemon_uids = trusted_daemon_uids(daemon_user, os.environ)
        self.fallback: Fallback = fallback
        self.fallback_rate = float(fallback_rate)
        self.connect_timeout = connect_timeout
        self.default_timeout = default_timeout
        self.connect_attempts = max(1, connect_attempts)
        self.fallback_probe_interval = fallback_probe_interval
        #: Connections opened so far (1 + the number of reconnects).
        self.connections_made = 0
        self._ids = itertools.count(1)
        self._local: dict[str, LimiterT] = {}
        self._in_fallback = False
        self._next_probe = 0.0  # monotonic time of the next connection attempt in fallback

    def _request_line(self, body: dict[str, Any]) -> tuple[int, bytes]:
        """Give `body` the next request id; return the id and the line to send."""
        rid = next(self._ids)
        body["id"] = rid
        return rid, encode_line(body)

    def _permit(self, provider: str, response: dict[str, Any]) -> Permit:
        """The permit of a granted acquire; a unit the daemon ignored is warned about once per process."""
        permit = permit_from_response(provider, response)
        for unit in permit.ignored_units:
            key = (permit.provider, unit)
            if key not in _warned_units and len(_warned_units) < _MAX_WARNED_UNITS:
                _warned_units.add(key)
                self._logger.warning(
                    "ratelimitd: provider %r does not limit the unit %r, so that part of the cost "
                    "is ignored (a typo? the units it limits are in `ratelimitd status %s`)",
                    permit.provider,
                    unit,
                    permit.provider,
                )
        return permit

    def _acquire_timeout(self, timeout: float | None) -> float | None:
        """The `timeout` an acquire sends: its own, else the client's `default_timeout`."""
        return self.default_timeout if timeout is None else timeout

    # -- connecting -----------------------------------------------------------------------------

    def _connect_retrying(self, retrying: type[RetryingT], now: float) -> RetryingT:
        """How to retry opening a connection at `now` (tenacity's `Retrying` or `AsyncRetrying`).

        :raises DaemonUnavailable: falling back locally, and the next probe is not due yet.
        """
        if self._in_fallback and now < self._next_probe:
            raise DaemonUnavailable(self.socket_path, "still unreachable (falling back locally)")
        # While falling back, probe once per interval instead of backing off on every call.
        return retrying(
            stop=stop_after_attempt(1 if self._in_fallback else self.connect_attempts),
            wait=wait_exponential(multiplier=0.02, max=0.25),
            # An untrusted daemon is an answer, not a hiccup: not retried.
            retry=retry_if_exception(
                lambda exc: isinstance(exc, OSError) and not isinstance(exc, UntrustedDaemon)
            ),
            reraise=True,
        )

    def _connect_failed(self, exc: OSError, now: float) -> DaemonUnavailable:
        """The error to raise (`from exc`) when every attempt failed; the next probe is due later."""
        self._next_probe = now + self.fallback_probe_interval
        if isinstance(exc, UntrustedDaemon):
            return exc
        return DaemonUnavailable(self.socket_path, str(exc) or type(exc).__name__)

    def _connected(self) -> None:
        """Count a new connection; a client that was falling back uses the daemon again."""
        if self._in_fallback:
            self._in_fallback = False
            self._logger.info("ratelimitd is reachable again at %s", self.socket_path)
        self.connections_made += 1

    # -- local fallback -------------------------------------------------------------------------

    def _raise_unless_falling_back(self, exc: DaemonUnavailable) -> None:
        """Raise `exc` again unless `fallback="local"` lets the client go on without the daemon.

        A lost connection is raised even then: the daemon may have run the request
        (granted the permit), and the next call reconnects.
        """
        if self.fallback == "raise" or isinstance(exc, ConnectionLost):
            raise exc

    def _local_limiter_for(self, provider: str, cause: DaemonUnavailable) -> LimiterT:
        """The fallback limiter of `provider`, made on first need; the outage is logged once."""
        if not self._in_fallback:
            self._in_fallback = True
            self._logger.warning(
                "ratelimitd is unreachable (%s); limiting locally at %g permits/s per provider "
                "until it is back",
                cause.reason,
                self.fallback_rate,
            )
        limiter = self._local.get(provider)
        if limiter is None:
            limiter = self._local[provider] = self._new_local_limiter()
        return limiter

    @abstractmethod
    def _new_local_limiter(self) -> LimiterT:
        """A limiter of `fallback_rate` permits per second for one provider."""

    def local_limiter(self, provider: str) -> LimiterT | None:
        """The fallback limiter of `provider`, once one was needed (for inspection)."""
        return self._local.get(provider)

    def _local_permit(self, provider: str, waited: float) -> Permit:
        return Permit(provider, LOCAL_FALLBACK_BUCKET, None, waited, self.fallback_rate)

    def _drop_report(self, provider: str, bucket: str, cause: DaemonUnavailable | str) -> ReportResult:
        """The result of a report kept here, or `cause` raised again with `fallback="raise"`.

        A `str` cause is a report that had nowhere to go (a local permit's).
        """
        if isinstance(cause, DaemonUnavailable):
            if self.fallback == "raise":
                raise cause
            cause = cause.reason
        self._logger.debug("report for %s/%s dropped: %s", provider, bucket, cause)
        return ReportResult(provider, bucket, None, 0, "dropped")
