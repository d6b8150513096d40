"""Retry policies for calls made under permits, built on tenacity.

Pure: no I/O, no clock reads, no sleeping; the callers in `ratelimitd.client.retry_calls`
run the attempts. A policy decides, after each failed attempt, how long to wait and
whether to stop:

- wait: the daemon's `retry_after` (it refused a permit) or the server's Retry-After
  (retrying a bucket already tried), else exponential backoff with full jitter (a
  uniform draw in `[0, min(max_wait, base_wait * multiplier ** (n - 1))]`, AWS
  Architecture Blog, "Exponential Backoff And Jitter", 2015). A move to a bucket not
  tried yet does not wait out the old bucket's Retry-After (the daemon pauses that
  bucket); with `failover_immediately` it waits nothing at all.
- stop: after `max_attempts` (capped at 100), before a wait would pass `max_time`
  seconds in all, or when the wait asked for is longer than `max_retry_after` (the
  caller had rather come back later: "defer").
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from tenacity import RetryCallState, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

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

MAX_ATTEMPTS_CAP: Final = 100
DEFAULT_IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
# Report statuses after which the next attempt goes to another bucket.
DEFAULT_FAILOVER_ON: Final[frozenset[int | str]] = frozenset({429, "5xx", "network_error"})

OperationKind = Literal["download", "validate", "resolve", "extract", "manifest_fetch"]
Source = Literal["server", "daemon"]


def status_matches(status: int | str, patterns: frozenset[int | str]) -> bool:
    """Whether `status` (an HTTP status or `network_error`) is named by `patterns`.

    A pattern is an exact status (`429`), a class (`"5xx"`) or `"network_error"`.
    """
    if status in patterns:
        return True
    return isinstance(status, int) and f"{status // 100}xx" in patterns


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How one kind of operation retries. Durations are seconds.

    :param max_attempts: attempts in all, first included; capped at `MAX_ATTEMPTS_CAP`.
    :param max_time: total seconds, waits included, after which no new wait starts (None: no bound).
    :param base_wait: backoff bound of the first retry; it grows by `multiplier` per attempt ...
    :param max_wait: ... up to this bound (the draw is uniform below the bound: full jitter).
    :param max_retry_after: a Retry-After or daemon `retry_after` longer than this stops the
        retries at once (None: any is waited out, within `max_time`).
    :param failover_on: statuses after which the bucket is excluded and the next attempt goes
        to another bucket; they are retried.
    :param auth_failover: a 401/403 also fails over (the key was refused, not the request).
    :param failover_immediately: a move to a bucket not tried yet waits nothing.
    :param acquire_timeout: the `timeout` of each acquire (None: the client's default).
    """

    name: str = "custom"
    max_attempts: int = 5
    max_time: float | None = 120.0
    base_wait: float = 0.5
    multiplier: float = 2.0
    max_wait: float = 30.0
    max_retry_after: float | None = None
    failover_on: frozenset[int | str] = DEFAULT_FAILOVER_ON
    auth_failover: bool = True
    failover_immediately: bool = False
    acquire_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {self.max_attempts!r}")
        object.__setattr__(self, "max_attempts", min(self.max_attempts, MAX_ATTEMPTS_CAP))
        for name in ("max_time", "max_retry_after", "acquire_timeout"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0 or None, got {value!r}")
        for name in ("base_wait", "max_wait"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"multiplier: must be a finite number >= 1, got {self.multiplier!r}")
        object.__setattr__(self, "failover_on", frozenset(self.failover_on))

    def with_changes(self, **changes: Any) -> RetryPolicy:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def fails_over(self, status: int | str) -> bool:
        """Whether a call that ended with `status` is retried on another bucket."""
        if self.auth_failover and status in (401, 403):
            return True
        return status_matches(status, self.failover_on)

    def wait(self, rng: Callable[[], float] = random.random) -> WaitRetryAfterOrJitter:
        """The tenacity wait strategy; `rng` returns floats in [0, 1) (inject one in tests)."""
        return WaitRetryAfterOrJitter(self, rng)

    def stop(self) -> stop_base:
        """The tenacity stop strategy: attempts, total time, and too long a Retry-After."""
        stop: stop_base = stop_after_attempt(self.max_attempts)
        if self.max_time is not None:
            stop = stop | StopAfterTotal(self.max_time)
        if self.max_retry_after is not None:
            stop = stop | StopWhenWaitTooLong(self.max_retry_after)
        return stop


PRESETS: Final[Mapping[str, RetryPolicy]] = {
    # Aggressive: many attempts, short waits (bulk transfers that must finish).
    "download": RetryPolicy(
        name="download", max_attempts=12, max_time=600.0, base_wait=0.1, max_wait=5.0, max_retry_after=120.0
    ),
    # Defer: one retry at most, and only a short wait (the daemon holds an acquire no longer
    # either); the caller comes back later.
    "validate": RetryPolicy(
        name="validate",
        max_attempts=2,
        max_time=10.0,
        base_wait=0.5,
        max_wait=2.0,
        max_retry_after=5.0,
        acquire_timeout=5.0,
    ),
    # Fail over to the next bucket at once; back off only once every bucket was tried.
    "resolve": RetryPolicy(
        name="resolve", max_attempts=6, max_time=60.0, base_wait=0.2, max_wait=5.0, failover_immediately=True
    ),
    # Standard.
    "extract": RetryPolicy(name="extract", max_attempts=5, max_time=120.0, base_wait=0.5, max_wait=30.0),
    # Defer, like validate, with a little more patience.
    "manifest_fetch": RetryPolicy(
        name="manifest_fetch",
        max_attempts=3,
        max_time=30.0,
        base_wait=0.5,
        max_wait=5.0,
        max_retry_after=10.0,
        acquire_timeout=10.0,
    ),
}


def preset(kind: str, **changes: Any) -> RetryPolicy:
    """The preset policy of an operation kind (see `PRESETS`), with some fields changed."""
    try:
        policy = PRESETS[kind]
    except KeyError:
        raise ValueError(f"kind: expected one of {', '.join(PRESETS)}, got {kind!r}") from None
    return policy.with_changes(**changes) if changes else policy


def policies_from_mapping(table: Mapping[str, Mapping[str, Any]]) -> dict[str, RetryPolicy]:
    """Presets with overrides from a mapping such as a TOML `[retry.<kind>]` table.

    A kind that is not a preset starts from the `extract` defaults. Unknown fields raise
    ValueError naming `retry.<kind>.<field>`.
    """
    fields = {f.name for f in dataclasses.fields(RetryPolicy)} - {"name"}
    policies = dict(PRESETS)
    for kind, overrides in table.items():
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"retry.{kind}.{unknown[0]}: unknown field (known: {', '.join(sorted(fields))})")
        values = dict(overrides)
        if "failover_on" in values:
            values["failover_on"] = frozenset(values["failover_on"])
        base = policies.get(kind, PRESETS["extract"])
        policies[kind] = base.with_changes(name=kind, **values)
    return policies


# -- what happened ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a logical request: where it went and how it ended.

    `status` is the HTTP status, `"network_error"`, or the daemon's error code when no
    permit was granted (`timeout`, `all_buckets_exhausted`). `wait` is the seconds waited
    after it (None for the last attempt).
    """

    number: int
    bucket: str | None
    status: int | str
    reason: str
    wait: float | None = None

    def describe(self) -> str:
        where = self.bucket if self.bucket is not None else "no bucket"
        text = f"#{self.number} {where}: {self.status} ({self.reason})"
        return text if self.wait is None else f"{text}, waited {self.wait:.3f} s"


class AttemptFailed(Exception):
    """One attempt failed in a way the policy retries (raised inside the retry loop).

    :param retry_after: seconds the server (Retry-After) or the daemon asked to wait.
    :param fresh_failover: the failed bucket is now excluded and was never tried before by
        this logical request, so the next attempt goes somewhere new.
    :param result: what the call returned (an HTTP response), for the final error.
    """

    def __init__(
        self,
        attempt: Attempt,
        *,
        source: Source,
        retry_after: float | None = None,
        fresh_failover: bool = False,
        result: object = None,
    ) -> None:
        super().__init__(attempt.describe())
        self.attempt = attempt
        self.source: Source = source
        self.retry_after = retry_after
        self.fresh_failover = fresh_failover
        self.result = result


class RetriesExhausted(Exception):
    """Every attempt of a logical request failed; `attempts` lists them all, in order.

    `retry_after` is the last wait the server or daemon asked for (when to come back);
    `last_result` is what the last call returned (None when no permit was granted).
    """

    def __init__(
        self,
        provider: str,
        policy: str,
        attempts: tuple[Attempt, ...],
        *,
        why: str,
        retry_after: float | None = None,
        last_result: object = None,
    ) -> None:
        lines = "; ".join(a.describe() for a in attempts)
        come_back = "" if retry_after is None else f"; retry after about {retry_after:.3f} s"
        count = len(attempts)
        super().__init__(
            f"{provider}: {count} attempt(s) failed under policy {policy!r} ({why}){come_back}: {lines}"
        )
        self.provider = provider
        self.policy = policy
        self.attempts = attempts
        self.why = why
        self.retry_after = retry_after
        self.last_result = last_result


# -- tenacity strategies ----------------------------------------------------------------------


def backoff_bound(policy: RetryPolicy, attempt_number: int) -> float:
    """The full-jitter bound after attempt `attempt_number` (1-based): the wait is drawn below it."""
    try:
        grown = policy.base_wait * policy.multiplier ** max(0, attempt_number - 1)
    except OverflowError:
        return policy.max_wait
    return min(policy.max_wait, grown)


def _failure(retry_state: RetryCallState) -> AttemptFailed | None:
    outcome = retry_state.outcome
    if outcome is None or not outcome.failed:
        return None
    exc = outcome.exception()
    return exc if isinstance(exc, AttemptFailed) else None


class WaitRetryAfterOrJitter(wait_base):
    """Wait what the server or the daemon asked for, else full-jitter exponential backoff."""

    def __init__(self, policy: RetryPolicy, rng: Callable[[], float]) -> None:
        self.policy = policy
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        failure = _failure(retry_state)
        if failure is not None:
            if failure.fresh_failover:
                # The next attempt goes to another bucket: a Retry-After binds only the bucket that
                # sent it (the daemon pauses that one), so it is not waited out here.
                if self.policy.failover_immediately:
                    return 0.0
            elif failure.retry_after is not None:
                return max(0.0, failure.retry_after)
        return self.rng() * backoff_bound(self.policy, retry_state.attempt_number)


class StopAfterTotal(stop_base):
    """Stop before a wait that would end past `max_time` seconds since the first attempt.

    Elapsed time is the larger of the real time since the start and the waits asked for,
    so an injected sleep that does not sleep still counts its waits.
    """

    def __init__(self, max_time: float) -> None:
        self.max_time = max_time

    def __call__(self, retry_state: RetryCallState) -> bool:
        elapsed = max(retry_state.seconds_since_start or 0.0, retry_state.idle_for)
        return elapsed + (retry_state.upcoming_sleep or 0.0) > self.max_time


class StopWhenWaitTooLong(stop_base):
    """Stop when the server or the daemon asks for a longer wait than `max_retry_after` (defer)."""

    def __init__(self, max_retry_after: float) -> None:
        self.max_retry_after = max_retry_after

    def __call__(self, retry_state: RetryCallState) -> bool:
        failure = _failure(retry_state)
        if failure is None or failure.retry_after is None:
            return False
        return (retry_state.upcoming_sleep or 0.0) > self.max_retry_after
