"""Stable error codes of protocol v1 and the one exception that carries them.

Pure: no I/O. The codes are API (clients branch on them); messages may change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = ("ConfigError", "ErrorCode", "RatelimitdError")


class ErrorCode(StrEnum):
    """The error table of protocol v1 (docs/protocol.md, "Responses")."""

    INVALID_JSON = "invalid_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    LINE_TOO_LONG = "line_too_long"
    UNKNOWN_PROVIDER = "unknown_provider"
    TOO_MANY_PROVIDERS = "too_many_providers"
    COST_TOO_LARGE = "cost_too_large"
    TIMEOUT = "timeout"
    ALL_BUCKETS_EXHAUSTED = "all_buckets_exhausted"
    SHUTTING_DOWN = "shutting_down"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"


class RatelimitdError(Exception):
    """An error with a stable `code`, a message for people and extra response fields.

    `fields` (for example `retry_after` or `reasons`) are sent in the error response
    beside `error` and `message`.
    """

    def __init__(self, code: ErrorCode, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields

    def __repr__(self) -> str:
        return f"RatelimitdError({self.code.value!r}, {self.message!r})"


class ConfigError(Exception):
    """A configuration could not be loaded; `problems` lists every error with its key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        joined = "\n  ".join(problems)
        super().__init__(f"{source}: {len(problems)} configuration error(s):\n  {joined}")
