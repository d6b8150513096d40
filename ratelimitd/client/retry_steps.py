"""What one logical request decides across its attempts, for both attempt loops.

Pure: no I/O, no sleeping, no logging, no clock reads (`now_wall` is a parameter).
`ratelimitd.client.retry_calls` acquires, sends, reports and waits, awaiting (`call_async`)
or blocking (`call_sync`), and asks a `LogicalRequest` what each answer means: ask
again without exclusions, fail over, honour a Retry-After, give up, or return.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from ratelimitd.client.errors import AllBucketsExhausted
from ratelimitd.client.retry import Attempt, AttemptFailed, RetriesExhausted
from ratelimitd.core.headers.parse import parse_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tenacity import RetryCallState

    from ratelimitd.client.errors import PermitTimeout
    from ratelimitd.client.retry import RetryPolicy
    from ratelimitd.client.types import Permit

__all__ = ("AttemptContext", "LogicalRequest", "Outcome")

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one call went: an HTTP status or `network_error`, its headers, the body's error code.

    `used` is what the call consumed per unit, when known now (settles the permit's cost).
    `report=False` leaves the report to the caller, who sends it once it knows more (an
    integration that reads the token usage at the end of the body it passes on).
    """

    status: int | Literal["network_error"]
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None
    used: Mapping[str, float] | None = None
    report: bool = True


@dataclass(frozen=True, slots=True)
class AttemptContext:
    """What `send` needs for one attempt: the permit's bucket and the headers to add."""

    provider: str
    permit: Permit
    number: int
    idempotency_header: str
    idempotency_key: str

    @property
    def bucket(self) -> str:
        return self.permit.bucket

    @property
    def headers(self) -> dict[str, str]:
        """Headers every attempt of the logical request carries (the idempotency key)."""
        return {self.idempotency_header: self.idempotency_key}


class LogicalRequest(Generic[R]):
    """The state one logical request keeps across its attempts, and the decisions made on it.

    `excluded` lists the buckets that failed over (the next acquire's `exclude`);
    `attempts` records every attempt, in order.
    """

    def __init__(
        self, provider: str, policy: RetryPolicy, idempotency_header: str, idempotency_key: str
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.idempotency_header = idempotency_header
        self.idempotency_key = idempotency_key
        self.excluded: list[str] = []
        self.tried: set[str] = set()
        self.attempts: list[Attempt] = []
        self.last_result: R | None = None

    @property
    def number(self) -> int:
        """The number of the attempt under way (1-based)."""
        return len(self.attempts) + 1

    def context(self, permit: Permit) -> AttemptContext:
        return AttemptContext(
            self.provider, permit, self.number, self.idempotency_header, self.idempotency_key
        )

    def refused(self, exc: PermitTimeout | AllBucketsExhausted) -> AttemptFailed | None:
        """The daemon granted no permit: the AttemptFailed that waits its `retry_after`.

        None starts a new round: every bucket left was excluded, so the exclusions are
        dropped and the caller asks again at once (and the daemon decides who is available).
        """
        if isinstance(exc, AllBucketsExhausted):
            if self.excluded and "excluded" in exc.reasons.values():
                self.excluded.clear()
                return None
            reason = ", ".join(f"{b} {why}" for b, why in exc.reasons.items()) or exc.message
        else:
            reason = "no permit within the acquire timeout"
        attempt = Attempt(self.number, None, exc.code.value, reason)
        self.attempts.append(attempt)
        return AttemptFailed(attempt, source="daemon", retry_after=exc.retry_after)

    def judge(self, permit: Permit, outcome: Outcome, result: R, now_wall: float) -> AttemptFailed | None:
        """Record an answer; the AttemptFailed to raise when the policy retries its status.

        :param now_wall: unix seconds when the answer came (an HTTP-date Retry-After is relative to it).
        """
        retry_after = None
        status = outcome.status
        if outcome.headers and self.policy.fails_over(status):
            http_status = status if isinstance(status, int) else None
            retry_after = parse_headers(outcome.headers, status=http_status, now_wall=now_wall).retry_after
        return self._record(permit.bucket, outcome, result, retry_after)

    def network_error(self, permit: Permit, error: BaseException) -> AttemptFailed | None:
        """Record a call that raised `error` instead of answering; an AttemptFailed if it is retried."""
        return self._record(permit.bucket, Outcome("network_error", reason=type(error).__name__), None, None)

    def _record(
        self, bucket: str, outcome: Outcome, result: R | None, retry_after: float | None
    ) -> AttemptFailed | None:
        """Append the attempt; on a failover status exclude its bucket and build the AttemptFailed."""
        self.last_result = result
        status = outcome.status
        if not self.policy.fails_over(status):
            self.attempts.append(Attempt(self.number, bucket, status, outcome.reason or "done"))
            return None
        fresh = bucket not in self.tried
        self.tried.add(bucket)
        if bucket not in self.excluded:
            self.excluded.append(bucket)
        why = outcome.reason or ("failover" if retry_after is None else f"Retry-After {retry_after:g} s")
        attempt = Attempt(self.number, bucket, status, why)
        self.attempts.append(attempt)
        return AttemptFailed(
            attempt, source="server", retry_after=retry_after, fresh_failover=fresh, result=result
        )

    def note_wait(self, wait: float) -> Attempt:
        """Note the wait chosen after the last attempt; returns that attempt as noted."""
        self.attempts[-1] = noted = dataclasses.replace(self.attempts[-1], wait=wait)
        return noted

    def give_up(self, retry_state: RetryCallState) -> RetriesExhausted:
        """The aggregated error once tenacity stops, saying why the retries stopped."""
        outcome = retry_state.outcome
        failure = outcome.exception() if outcome is not None else None
        return self.exhausted(failure, retry_state.attempt_number, retry_state.upcoming_sleep)

    def exhausted(self, failure: BaseException | None, attempt_number: int, wait: float) -> RetriesExhausted:
        """The aggregated error after attempt `attempt_number` failed with `failure`, the next wait `wait`."""
        retry_after = failure.retry_after if isinstance(failure, AttemptFailed) else None
        policy = self.policy
        if attempt_number >= policy.max_attempts:
            why = f"max_attempts {policy.max_attempts} reached"
        elif policy.max_retry_after is not None and wait > policy.max_retry_after:
            why = f"asked to wait {wait:.3f} s, over max_retry_after {policy.max_retry_after:g} s: deferred"
        else:
            why = f"waiting {wait:.3f} s more would pass max_time {policy.max_time} s"
        return RetriesExhausted(
            self.provider,
            policy.name,
            tuple(self.attempts),
            why=why,
            retry_after=retry_after,
            last_result=self.last_result,
        )
