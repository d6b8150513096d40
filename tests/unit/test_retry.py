"""Retry policies with plain numbers: wait and stop strategies, presets, the final error.

A fake random source makes every jittered wait exact; sleeping is replaced by a
recorder, so nothing here waits.
"""

from __future__ import annotations

import math

import pytest
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from ratelimitd.retry import (
    MAX_ATTEMPTS_CAP,
    PRESETS,
    Attempt,
    AttemptFailed,
    RetriesExhausted,
    RetryPolicy,
    StopAfterTotal,
    StopWhenWaitTooLong,
    backoff_bound,
    policies_from_mapping,
    preset,
    status_matches,
)


class FakeRandom:
    """Returns the given draws in turn (each in [0, 1))."""

    def __init__(self, *draws: float) -> None:
        self.draws = list(draws)
        self.calls = 0

    def __call__(self) -> float:
        value = self.draws[self.calls % len(self.draws)]
        self.calls += 1
        return value


def failed(
    status: int | str = 503,
    *,
    source: str = "server",
    retry_after: float | None = None,
    fresh: bool = False,
    bucket: str | None = "a",
) -> AttemptFailed:
    attempt = Attempt(1, bucket, status, "test")
    if source == "daemon":
        return AttemptFailed(attempt, source="daemon", retry_after=retry_after, fresh_failover=fresh)
    return AttemptFailed(attempt, source="server", retry_after=retry_after, fresh_failover=fresh)


def call_state(
    attempt_number: int,
    failure: BaseException | None = None,
    *,
    upcoming: float = 0.0,
    idle_for: float = 0.0,
    since_start: float = 0.0,
) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt_number
    if failure is not None:
        state.set_exception((type(failure), failure, None))
    state.outcome_timestamp = state.start_time + since_start
    state.upcoming_sleep = upcoming
    state.idle_for = idle_for
    return state


# -- status patterns and policies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, True), (500, True), (503, True), (599, True), ("network_error", True), (404, False), (200, False)],
)
def test_default_failover_statuses(status: int | str, expected: bool) -> None:
    assert status_matches(status, RetryPolicy().failover_on) is expected


def test_auth_failures_fail_over_unless_turned_off() -> None:
    assert RetryPolicy().fails_over(401)
    assert RetryPolicy().fails_over(403)
    assert not RetryPolicy(auth_failover=False).fails_over(401)
    assert RetryPolicy(failover_on=frozenset({503})).fails_over(503)
    assert not RetryPolicy(failover_on=frozenset({503})).fails_over(502)


def test_attempts_are_capped_at_100() -> None:
    assert RetryPolicy(max_attempts=1000).max_attempts == MAX_ATTEMPTS_CAP == 100
    assert RetryPolicy(max_attempts=7).max_attempts == 7


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_attempts", 0, "max_attempts: must be >= 1, got 0"),
        ("max_time", -1.0, "max_time: must be a finite number >= 0 or None, got -1.0"),
        ("max_wait", math.inf, "max_wait: must be a finite number >= 0, got inf"),
        ("multiplier", 0.5, "multiplier: must be a finite number >= 1, got 0.5"),
        ("max_retry_after", math.nan, "max_retry_after: must be a finite number >= 0 or None, got nan"),
    ],
)
def test_bad_policy_fields_are_named(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.") + "$"):
        RetryPolicy().with_changes(**{field: value})


def test_presets_have_the_documented_character() -> None:
    download, validate, resolve = PRESETS["download"], PRESETS["validate"], PRESETS["resolve"]
    extract, manifest = PRESETS["extract"], PRESETS["manifest_fetch"]
    # download: aggressive, more attempts and shorter waits than the standard.
    assert download.max_attempts > extract.max_attempts
    assert download.max_wait < extract.max_wait
    assert download.base_wait < extract.base_wait
    # validate and manifest_fetch: defer, give up fast and do not wait out long Retry-Afters.
    for defer in (validate, manifest):
        assert defer.max_attempts < extract.max_attempts
        assert defer.max_retry_after is not None
        assert defer.max_retry_after <= 10
    # resolve: fails over at once; only it does.
    assert [p.name for p in PRESETS.values() if p.failover_immediately] == ["resolve"]
    assert resolve.name == "resolve"


def test_presets_can_be_changed() -> None:
    assert preset("download", max_attempts=30).max_attempts == 30
    assert preset("download") is PRESETS["download"]
    with pytest.raises(ValueError, match="kind: expected one of download, validate"):
        preset("upload")
    policies = policies_from_mapping(
        {"validate": {"max_attempts": 1}, "bulk": {"max_wait": 1.5, "failover_on": [429]}}
    )
    assert policies["validate"].max_attempts == 1
    assert policies["validate"].max_retry_after == PRESETS["validate"].max_retry_after
    assert policies["bulk"].name == "bulk"
    assert policies["bulk"].max_wait == 1.5
    assert policies["bulk"].failover_on == frozenset({429})
    assert policies["bulk"].max_attempts == PRESETS["extract"].max_attempts
    with pytest.raises(ValueError, match=r"^retry\.bulk\.attempts: unknown field"):
        policies_from_mapping({"bulk": {"attempts": 3}})


# -- waits -----------------------------------------------------------------------------------------


def test_backoff_bound_grows_then_caps() -> None:
    policy = RetryPolicy(base_wait=0.5, multiplier=2.0, max_wait=5.0)
    assert [backoff_bound(policy, n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_bound(RetryPolicy(multiplier=1e6, max_wait=3.0), 100) == 3.0  # no overflow


def test_full_jitter_draws_below_the_bound() -> None:
    policy = RetryPolicy(base_wait=0.5, multiplier=2.0, max_wait=5.0)
    wait = policy.wait(FakeRandom(0.0, 0.5, 0.999))
    waits = [wait(call_state(n, failed(503))) for n in (1, 2, 3)]
    assert waits == pytest.approx([0.0, 0.5, 0.999 * 2.0])


def test_the_servers_retry_after_is_waited_exactly() -> None:
    wait = RetryPolicy(max_wait=1.0).wait(FakeRandom(0.5))
    assert wait(call_state(1, failed(429, retry_after=7.5))) == 7.5  # more than max_wait: still honoured


def test_the_daemons_retry_after_is_waited_exactly() -> None:
    wait = RetryPolicy().wait(FakeRandom(0.5))
    assert wait(call_state(3, failed("all_buckets_exhausted", source="daemon", retry_after=0.25))) == 0.25


def test_immediate_failover_waits_nothing_for_a_new_bucket_only() -> None:
    wait = preset("resolve").wait(FakeRandom(0.5))
    assert wait(call_state(1, failed(429, retry_after=30.0, fresh=True))) == 0.0
    assert wait(call_state(4, failed(429, retry_after=30.0, fresh=False))) == 30.0
    assert wait(call_state(4, failed(503, fresh=False))) == 0.5 * backoff_bound(preset("resolve"), 4)
    # Without failover_immediately a new bucket waits the backoff, not the old bucket's Retry-After.
    extract = preset("extract").wait(FakeRandom(0.5))
    assert extract(call_state(1, failed(503, fresh=True))) == 0.25
    assert extract(call_state(2, failed(429, retry_after=30.0, fresh=True))) == 0.5


# -- stops -------------------------------------------------------------------------------------------


def test_stop_after_total_counts_waits_even_when_sleep_does_not_sleep() -> None:
    stop = StopAfterTotal(10.0)
    assert not stop(call_state(2, failed(), upcoming=4.0, idle_for=6.0, since_start=0.1))
    assert stop(call_state(2, failed(), upcoming=4.1, idle_for=6.0, since_start=0.1))
    assert stop(call_state(2, failed(), upcoming=1.0, idle_for=0.0, since_start=9.5))


def test_stop_when_the_wait_asked_for_is_too_long() -> None:
    stop = StopWhenWaitTooLong(5.0)
    assert stop(call_state(1, failed(429, retry_after=30.0), upcoming=30.0))
    assert not stop(call_state(1, failed(429, retry_after=5.0), upcoming=5.0))
    assert not stop(call_state(1, failed(503), upcoming=20.0))  # backoff, not asked for


def run_policy(policy: RetryPolicy, failures: list[AttemptFailed], rng: FakeRandom) -> list[float]:
    """Drive tenacity with the policy over attempts that fail as listed; return the waits."""
    slept: list[float] = []
    attempts = iter(failures)

    def attempt() -> str:
        failure = next(attempts, None)
        if failure is None:
            return "ok"
        raise failure

    retrying = Retrying(
        sleep=slept.append,
        stop=policy.stop(),
        wait=policy.wait(rng),
        retry=retry_if_exception_type(AttemptFailed),
        reraise=True,
    )
    assert retrying(attempt) == "ok"
    return slept


def test_a_run_mixes_retry_after_failover_and_jitter() -> None:
    policy = preset("resolve", max_attempts=10, max_time=None)
    waits = run_policy(
        policy,
        [
            failed(429, retry_after=30.0, fresh=True),  # key a: fail over at once
            failed(401, fresh=True),  # key b: fail over at once
            failed("all_buckets_exhausted", source="daemon", retry_after=1.25),  # daemon: wait its estimate
            failed(503, fresh=False),  # a bucket tried before: back off (attempt 4: bound 1.6)
        ],
        FakeRandom(0.25),
    )
    assert waits == pytest.approx([0.0, 0.0, 1.25, 0.25 * 1.6])


def test_attempts_stop_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, max_time=None)
    with pytest.raises(AttemptFailed):
        run_policy(policy, [failed(503)] * 5, FakeRandom(0.0))


def test_a_defer_policy_gives_up_instead_of_waiting_long() -> None:
    with pytest.raises(AttemptFailed) as caught:
        run_policy(preset("validate"), [failed(429, retry_after=60.0)], FakeRandom(0.0))
    assert caught.value.retry_after == 60.0


# -- the final error --------------------------------------------------------------------------------


def test_retries_exhausted_lists_every_attempt() -> None:
    attempts = (
        Attempt(1, "key-a", 429, "Retry-After 30 s", 0.0),
        Attempt(2, "key-b", 401, "failover", 0.0),
        Attempt(3, None, "all_buckets_exhausted", "key-a paused, key-b auth_failed"),
    )
    error = RetriesExhausted("api", "resolve", attempts, why="max_attempts 3 reached", retry_after=29.9)
    assert error.attempts == attempts
    assert str(error) == (
        "api: 3 attempt(s) failed under policy 'resolve' (max_attempts 3 reached); "
        "retry after about 29.900 s: "
        "#1 key-a: 429 (Retry-After 30 s), waited 0.000 s; #2 key-b: 401 (failover), waited 0.000 s; "
        "#3 no bucket: all_buckets_exhausted (key-a paused, key-b auth_failed)"
    )
