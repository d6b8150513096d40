"""The Python client: `AsyncClient` and `Client`, their permits and their errors.

`from ratelimitd.client import AsyncClient` is the public import path.
"""

from ratelimitd.client.async_client import (
    LOCAL_FALLBACK_BUCKET,
    AllBucketsExhausted,
    AsyncClient,
    BadRequest,
    Client,
    ConnectionLost,
    CostTooLarge,
    DaemonUnavailable,
    Forbidden,
    InternalError,
    InvalidJson,
    LineTooLong,
    Permit,
    PermitTimeout,
    RatelimitdClientError,
    ReportResult,
    ShuttingDown,
    TooManyProviders,
    UnknownOp,
    UnknownProvider,
    error_for,
    local_limiter,
)

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
    "error_for",
    "local_limiter",
)
