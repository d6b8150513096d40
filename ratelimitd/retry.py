"""Retry policies for calls to rate-limited APIs (the public path of `ratelimitd.client.retry`)."""

from ratelimitd.client.retry import (
    DEFAULT_FAILOVER_ON,
    DEFAULT_IDEMPOTENCY_HEADER,
    MAX_ATTEMPTS_CAP,
    PRESETS,
    Attempt,
    AttemptFailed,
    OperationKind,
    RetriesExhausted,
    RetryPolicy,
    StopAfterTotal,
    StopWhenWaitTooLong,
    WaitRetryAfterOrJitter,
    backoff_bound,
    policies_from_mapping,
    preset,
    status_matches,
)

__all__ = (
    "DEFAULT_FAILOVER_ON",
    "DEFAULT_IDEMPOTENCY_HEADER",
    "MAX_ATTEMPTS_CAP",
    "PRESETS",
    "Attempt",
    "AttemptFailed",
    "OperationKind",
    "RetriesExhausted",
    "RetryPolicy",
    "StopAfterTotal",
    "StopWhenWaitTooLong",
    "WaitRetryAfterOrJitter",
    "backoff_bound",
    "policies_from_mapping",
    "preset",
    "status_matches",
)
