"""The client's exceptions: one class per protocol error code, plus "no daemon".

Pure: no I/O. A daemon error response becomes an instance of the class that
`error_for(code)` names, carrying the response's extra fields as attributes
(`retry_after`, `reasons`). Connection problems are `DaemonUnavailable` (a
`ConnectionError`), never a `RatelimitdClientError`, because they carry no code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ratelimitd.core.errors import ErrorCode

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "AllBucketsExhausted",
    "BadRequest",
    "ConnectionLost",
    "CostTooLarge",
    "DaemonUnavailable",
    "Forbidden",
    "InternalError",
    "InvalidJson",
    "LineTooLong",
    "PermitTimeout",
    "RatelimitdClientError",
    "ShuttingDown",
    "TooManyProviders",
    "UnknownOp",
    "UnknownProvider",
    "UntrustedDaemon",
    "error_for",
    "error_from_response",
)


class RatelimitdClientError(Exception):
    """The daemon answered with an error: `code`, a `message` for people, extra `fields`."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.fields: dict[str, Any] = dict(fields or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"


def _retry_after(fields: Mapping[str, Any]) -> float | None:
    value = fields.get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class InvalidJson(RatelimitdClientError):
    """The daemon could not read a line as a JSON object (a client bug)."""


class BadRequest(RatelimitdClientError):
    """A field was missing, of the wrong type or out of range; the message names it."""


class UnknownOp(RatelimitdClientError):
    """The daemon does not know the op (an older daemon?)."""


class LineTooLong(RatelimitdClientError):
    """The request was longer than the daemon's `max_line_bytes`; it closed the connection."""


class UnknownProvider(RatelimitdClientError):
    """No such provider, and the daemon does not create providers on demand."""


class TooManyProviders(RatelimitdClientError):
    """Creating this provider would pass the daemon's `max_providers`."""


class CostTooLarge(RatelimitdClientError):
    """The cost is larger than a limit's burst: it can never be granted."""


class PermitTimeout(RatelimitdClientError):
    """No permit within the timeout; `retry_after` is the daemon's estimate in seconds."""

    def __init__(self, code: ErrorCode, message: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(code, message, fields)
        self.retry_after: float | None = _retry_after(self.fields)


class AllBucketsExhausted(RatelimitdClientError):
    """Every bucket of the provider is unavailable; `reasons` maps bucket -> reason code."""

    def __init__(self, code: ErrorCode, message: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(code, message, fields)
        raw = self.fields.get("reasons")
        self.reasons: dict[str, str] = (
            {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        )
        self.retry_after: float | None = _retry_after(self.fields)


class ShuttingDown(RatelimitdClientError):
    """The daemon is stopping; retrying reaches the next daemon."""


class Forbidden(RatelimitdClientError):
    """The daemon does not trust this process's user for that provider (e.g. a `reset`)."""


class InternalError(RatelimitdClientError):
    """A bug in the daemon; it logged it and keeps serving."""


_BY_CODE: Final[dict[ErrorCode, type[RatelimitdClientError]]] = {
    ErrorCode.INVALID_JSON: InvalidJson,
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.UNKNOWN_OP: UnknownOp,
    ErrorCode.LINE_TOO_LONG: LineTooLong,
    ErrorCode.UNKNOWN_PROVIDER: UnknownProvider,
    ErrorCode.TOO_MANY_PROVIDERS: TooManyProviders,
    ErrorCode.COST_TOO_LARGE: CostTooLarge,
    ErrorCode.TIMEOUT: PermitTimeout,
    ErrorCode.ALL_BUCKETS_EXHAUSTED: AllBucketsExhausted,
    ErrorCode.SHUTTING_DOWN: ShuttingDown,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.INTERNAL: InternalError,
}


def error_for(code: ErrorCode | str) -> type[RatelimitdClientError]:
    """The exception class for an error code; an unknown code maps to the base class."""
    try:
        return _BY_CODE[ErrorCode(code)]
    except ValueError:
        return RatelimitdClientError


def error_from_response(response: Mapping[str, Any]) -> RatelimitdClientError:
    """The exception for an `ok: false` response (fields other than the envelope kept)."""
    raw_code = response.get("error")
    message = response.get("message")
    text = message if isinstance(message, str) else "no message"
    fields = {k: v for k, v in response.items() if k not in ("id", "ok", "error", "message")}
    try:
        code = ErrorCode(str(raw_code))
    except ValueError:
        # A code from a newer daemon: keep it readable, branch on the base class.
        fields["unknown_code"] = raw_code
        return RatelimitdClientError(ErrorCode.INTERNAL, f"[{raw_code}] {text}", fields)
    return _BY_CODE[code](code, text, fields)


class DaemonUnavailable(ConnectionError):
    """The daemon could not be reached at `socket_path` (not running, or refusing)."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(f"ratelimitd is not reachable at {socket_path}: {reason}")
        self.socket_path = socket_path
        self.reason = reason


class ConnectionLost(DaemonUnavailable):
    """The connection broke while this request was in flight; whether it ran is unknown.

    The next call reconnects. An `acquire` that fails this way may or may not
    have consumed a permit.
    """


class UntrustedDaemon(DaemonUnavailable):
    """The socket is served by a user this client does not trust (`uid`); nothing was sent.

    With `fallback="local"` the client limits locally instead, as when no daemon runs.
    """

    def __init__(self, socket_path: str, reason: str, *, uid: int) -> None:
        super().__init__(socket_path, reason)
        self.uid = uid
