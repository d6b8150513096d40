"""A logical request's decisions with plain values: failover, Retry-After, new rounds, giving up.

No daemon and no event loop: answers are built by hand, the wall time is a number,
and giving up is driven by a real tenacity loop whose sleep records instead of sleeping.
"""

from __future__ import annotations

import pytest
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from ratelimitd.client.errors import AllBucketsExhausted, PermitTimeout
from ratelimitd.client.retry_steps import LogicalRequest, Outcome
from ratelimitd.client.types import Permit
from ratelimitd.core.errors import ErrorCode
from ratelimitd.retry import Attempt, AttemptFailed, RetriesExhausted, RetryPolicy, preset

NOW_WALL = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT


def new_request(policy: RetryPolicy | None = None) -> LogicalRequest[str]:
    return LogicalRequest("api", policy or preset("extract"), "Idempotency-Key", "0e6e1211" * 4)


def permit(bucket: str) -> Permit:
    return Permit("api", bucket, 1, 0.0, None)


def timeout(retry_after: float | None = 0.25) -> PermitTimeout:
    return PermitTimeout(ErrorCode.TIMEOUT, "no permit in time", {"retry_after": retry_after})


def exhausted(reasons: dict[str, str], retry_after: float | None = 30.0) -> AllBucketsExhausted:
    fields = {"reasons": reasons, "retry_after": retry_after}
    return AllBucketsExhausted(ErrorCode.ALL_BUCKETS_EXHAUSTED, "every bucket is unavailable", fields)


# -- answers ----------------------------------------------------------------------------------------


def test_a_status_the_policy_does_not_retry_ends_the_request() -> None:
    request = new_request()
    assert request.judge(permit("a"), Outcome(200, {"Retry-After": "30"}), "ok", NOW_WALL) is None
    assert request.judge(permit("b"), Outcome(404, reason="not_found"), "missing", NOW_WALL) is None
    assert request.attempts == [Attempt(1, "a", 200, "done"), Attempt(2, "b", 404, "not_found")]
    assert request.excluded == []
    assert request.last_result == "missing"


def test_a_failover_status_excludes_the_bucket_and_keeps_its_retry_after() -> None:
    request = new_request()
    failure = request.judge(permit("a"), Outcome(429, {"Retry-After": "30"}), "429 body", NOW_WALL)
    assert failure is not None
    assert (failure.source, failure.retry_after, failure.fresh_failover) == ("server", 30.0, True)
    assert failure.result == "429 body"
    assert failure.attempt == Attempt(1, "a", 429, "Retry-After 30 s")
    assert request.excluded == ["a"]
    # The body's error code names the attempt; no Retry-After says "failover".
    failure = request.judge(permit("b"), Outcome(401, reason="invalid_api_key"), "401 body", NOW_WALL)
    assert failure is not None
    assert failure.attempt == Attempt(2, "b", 401, "invalid_api_key")
    assert failure.retry_after is None
    failure = request.judge(permit("c"), Outcome(503), "503 body", NOW_WALL)
    assert failure is not None
    assert failure.attempt.reason == "failover"
    assert request.excluded == ["a", "b", "c"]


def test_an_http_date_retry_after_counts_from_the_wall_time_of_the_answer() -> None:
    request = new_request()
    outcome = Outcome(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    failure = request.judge(permit("a"), outcome, "429 body", NOW_WALL - 12.5)
    assert failure is not None
    assert failure.retry_after == 12.5


def test_a_bucket_failing_again_is_no_longer_a_fresh_failover() -> None:
    request = new_request()
    first = request.judge(permit("a"), Outcome(503), "", NOW_WALL)
    request.excluded.clear()  # as a new round does
    again = request.judge(permit("a"), Outcome(503), "", NOW_WALL)
    assert first is not None
    assert again is not None
    assert (first.fresh_failover, again.fresh_failover) == (True, False)
    assert request.excluded == ["a"]


def test_a_network_error_fails_over_unless_the_policy_leaves_it_out() -> None:
    request = new_request()
    failure = request.network_error(permit("a"), ConnectionResetError("reset by peer"))
    assert failure is not None
    assert failure.attempt == Attempt(1, "a", "network_error", "ConnectionResetError")
    assert (failure.retry_after, failure.fresh_failover, failure.result) == (None, True, None)
    assert request.excluded == ["a"]
    strict = new_request(RetryPolicy(failover_on=frozenset({429})))
    assert strict.network_error(permit("a"), TimeoutError()) is None
    assert strict.attempts == [Attempt(1, "a", "network_error", "TimeoutError")]
    assert strict.excluded == []


# -- refusals ---------------------------------------------------------------------------------------


def test_a_daemon_refusal_waits_the_daemons_retry_after() -> None:
    request = new_request()
    failure = request.refused(timeout(0.25))
    assert failure is not None
    assert (failure.source, failure.retry_after) == ("daemon", 0.25)
    assert failure.attempt == Attempt(1, None, "timeout", "no permit within the acquire timeout")
    failure = request.refused(exhausted({"a": "paused", "b": "auth_failed"}))
    assert failure is not None
    assert failure.attempt == Attempt(2, None, "all_buckets_exhausted", "a paused, b auth_failed")
    assert failure.retry_after == 30.0
    failure = request.refused(exhausted({}, retry_after=None))
    assert failure is not None
    assert failure.attempt.reason == "every bucket is unavailable"


def test_every_bucket_excluded_starts_one_new_round() -> None:
    request = new_request()
    assert request.judge(permit("a"), Outcome(503), "", NOW_WALL) is not None
    reasons = {"a": "excluded", "b": "paused"}
    assert request.refused(exhausted(reasons)) is None  # ask again at once, without exclusions
    assert request.excluded == []
    assert len(request.attempts) == 1
    # Nothing left to drop: the same answer is now a refusal to wait out.
    failure = request.refused(exhausted(reasons))
    assert failure is not None
    assert failure.attempt.number == 2
    # A timeout never starts a new round, even with buckets excluded.
    assert request.judge(permit("b"), Outcome(503), "", NOW_WALL) is not None
    assert request.refused(timeout()) is not None
    assert request.excluded == ["b"]


# -- bookkeeping ------------------------------------------------------------------------------------


def test_the_context_numbers_the_attempt_and_carries_the_idempotency_key() -> None:
    request = new_request()
    assert request.refused(timeout()) is not None
    context = request.context(permit("b"))
    assert (context.provider, context.bucket, context.number) == ("api", "b", 2)
    assert context.headers == {"Idempotency-Key": "0e6e1211" * 4}


def test_a_noted_wait_changes_only_the_last_attempt() -> None:
    request = new_request()
    request.judge(permit("a"), Outcome(503), "", NOW_WALL)
    request.judge(permit("b"), Outcome(503), "", NOW_WALL)
    assert request.note_wait(0.75) == Attempt(2, "b", 503, "failover", 0.75)
    assert [a.wait for a in request.attempts] == [None, 0.75]


# -- giving up --------------------------------------------------------------------------------------


def give_up_after(request: LogicalRequest[str], answers: list[Outcome | PermitTimeout]) -> RetriesExhausted:
    """Run tenacity with the request's policy over these answers (bucket `b<n>` for attempt n)."""
    slept: list[float] = []
    pending = iter(answers)

    def attempt() -> object:
        answer = next(pending)
        number = request.number
        if isinstance(answer, Outcome):
            failure = request.judge(permit(f"b{number}"), answer, f"result {number}", NOW_WALL)
        else:
            failure = request.refused(answer)
        if failure is None:
            return f"result {number}"
        raise failure

    def note_wait(state: RetryCallState) -> None:
        request.note_wait(state.upcoming_sleep)

    policy = request.policy
    retrying = Retrying(
        sleep=slept.append,
        stop=policy.stop(),
        wait=policy.wait(lambda: 0.5),
        retry=retry_if_exception_type(AttemptFailed),
        before_sleep=note_wait,
        retry_error_callback=request.give_up,
    )
    error = retrying(attempt)
    assert isinstance(error, RetriesExhausted)
    assert [a.wait for a in error.attempts] == [*slept, None]
    return error


@pytest.mark.parametrize(
    ("policy", "answers", "why", "retry_after", "last_result"),
    [
        (
            RetryPolicy(max_attempts=2, max_time=None),
            [Outcome(503), Outcome(429, {"Retry-After": "7"})],
            "max_attempts 2 reached",
            7.0,
            "result 2",
        ),
        (
            RetryPolicy(max_retry_after=5.0),
            [Outcome(503), timeout(30.0)],
            "asked to wait 30.000 s, over max_retry_after 5 s: deferred",
            30.0,
            "result 1",  # the refusal returned nothing: the last call's result stays
        ),
        (
            RetryPolicy(max_time=1.0),
            [timeout(2.0)],
            "waiting 2.000 s more would pass max_time 1.0 s",
            2.0,
            None,
        ),
    ],
)
def test_giving_up_says_why_and_when_to_come_back(
    policy: RetryPolicy,
    answers: list[Outcome | PermitTimeout],
    why: str,
    retry_after: float,
    last_result: str | None,
) -> None:
    request = new_request(policy)
    error = give_up_after(request, answers)
    assert error.why == why
    assert error.retry_after == retry_after
    assert error.last_result == last_result
    assert error.attempts == tuple(request.attempts)
    assert len(error.attempts) == len(answers)
    assert (error.provider, error.policy) == ("api", policy.name)
