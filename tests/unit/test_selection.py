"""Bucket selection with plain numbers: no event loop, no clock.

The buckets are real `Provider`/`Bucket`/`BucketLimiter` objects; the learner is a
small stand-in implementing the interface selection reads (`state`, `pause_until`,
`exhausted_until`, `disabled_until`), so each state can be set directly.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest

from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.lease import LeasedLimiter, LeaseSettings
from ratelimitd.core.protocol import AcquireRequest
from ratelimitd.core.providers import Provider
from ratelimitd.core.selection import (
    REASONS,
    bucket_availability,
    choose_bucket,
)
from ratelimitd.daemon.config import LimitConfig, ProviderConfig, Selection

KEYS = ("a", "b", "c")


@dataclass
class StandInLearner:
    """The learner interface selection uses; deadlines are monotonic seconds."""

    pause_until: float | None = None
    exhausted_until: float | None = None
    disabled_until: float | None = None

    def state(self, now: float) -> str:
        if self.disabled_until is not None and self.disabled_until > now:
            return "disabled"
        if self.exhausted_until is not None and self.exhausted_until > now:
            return "exhausted"
        if self.pause_until is not None and self.pause_until > now:
            return "paused"
        return "ok"


def make_provider(
    selection: Selection = "failover", buckets: tuple[str, ...] = KEYS, rate: float = 1.0, burst: float = 2.0
) -> Provider:
    config = ProviderConfig(
        name="api",
        limits=(LimitConfig(unit="requests", count=rate, period=1.0, burst=burst),),
        buckets=buckets,
        selection=selection,
    )
    provider = Provider(config, configured=True, now=0.0)
    for bucket in provider.buckets.values():
        bucket.learner = StandInLearner()
    return provider


def request(exclude: tuple[str, ...] = (), cost: float = 1.0) -> AcquireRequest:
    return AcquireRequest(
        id=None, provider="api", cost={"requests": cost}, timeout=None, exclude=frozenset(exclude)
    )


def learner(provider: Provider, name: str) -> StandInLearner:
    found = provider.buckets[name].learner
    assert isinstance(found, StandInLearner)
    return found


def drain(provider: Provider, name: str, now: float) -> None:
    """Take a bucket's whole burst at `now` (what granted permits do)."""
    bucket = provider.buckets[name]
    limit = bucket.limiter.units["requests"]
    assert bucket.limiter.try_take({"requests": limit.available(now)}, now) == 0.0


def pause(provider: Provider, name: str, until: float) -> None:
    """What the service does for a Retry-After: the learner pauses, the limiter holds."""
    learner(provider, name).pause_until = until
    provider.buckets[name].limiter.hold_until(until)


def grant(provider: Provider, req: AcquireRequest, now: float, timeout: float = math.inf) -> str:
    """Choose a bucket and take the cost there, as the service's acquire does."""
    bucket = choose_bucket(provider, req, now, timeout)
    assert bucket.limiter.try_take(req.cost, now) == 0.0, f"{bucket.name} chosen but cannot grant"
    return bucket.name


def exhausted(provider: Provider, req: AcquireRequest, now: float, timeout: float) -> RatelimitdError:
    with pytest.raises(RatelimitdError) as caught:
        choose_bucket(provider, req, now, timeout)
    assert caught.value.code is ErrorCode.ALL_BUCKETS_EXHAUSTED
    return caught.value


# -- failover -------------------------------------------------------------------------------------


def test_failover_uses_the_first_bucket_until_it_is_empty_then_the_next() -> None:
    provider = make_provider("failover", burst=2.0)
    chosen = [grant(provider, request(), now=0.0) for _ in range(6)]
    assert chosen == ["a", "a", "b", "b", "c", "c"]


def test_failover_goes_back_to_the_first_bucket_once_it_refills() -> None:
    provider = make_provider("failover", rate=1.0, burst=2.0)
    drain(provider, "a", 0.0)
    assert grant(provider, request(), now=0.0) == "b"
    assert grant(provider, request(), now=1.0) == "a"  # one permit refilled after 1 s at 1/s


@pytest.mark.parametrize(
    ("state", "reason"),
    [("paused", "paused"), ("exhausted", "quota_exhausted"), ("disabled", "auth_failed")],
)
def test_an_unavailable_bucket_is_skipped_when_another_can_serve(state: str, reason: str) -> None:
    provider = make_provider("failover")
    if state == "paused":
        pause(provider, "a", 30.0)
    elif state == "exhausted":
        learner(provider, "a").exhausted_until = 3600.0
    else:
        learner(provider, "a").disabled_until = math.inf
    assert grant(provider, request(), now=0.0, timeout=60.0) == "b"
    availability = bucket_availability(provider.buckets["a"], 0.0, {"requests": 1.0})
    assert (availability.state, availability.reason) == (state, reason)


def test_a_paused_bucket_is_queued_on_when_it_is_the_soonest_within_the_timeout() -> None:
    provider = make_provider("failover", rate=1.0, burst=1.0)
    pause(provider, "a", 2.0)
    learner(provider, "b").disabled_until = math.inf
    drain(provider, "c", 0.0)  # c refills 1 permit in 1 s
    assert choose_bucket(provider, request(), 0.0, timeout=5.0).name == "c"
    drain(provider, "c", 0.0)
    provider.buckets["c"].limiter.hold_until(10.0)  # c now only after 10 s: a (2 s + 1 s) is sooner
    assert choose_bucket(provider, request(), 0.0, timeout=5.0).name == "a"


def test_exclude_is_never_granted() -> None:
    provider = make_provider("failover")
    assert grant(provider, request(exclude=("a",)), now=0.0) == "b"
    assert grant(provider, request(exclude=("a", "b")), now=0.0) == "c"
    error = exhausted(provider, request(exclude=KEYS), now=0.0, timeout=60.0)
    assert error.fields["reasons"] == dict.fromkeys(KEYS, "excluded")
    assert "retry_after" not in error.fields  # no non-excluded bucket to come back


# -- exhaustion: reasons and retry_after ---------------------------------------------------------


def test_every_reason_and_the_earliest_retry_after() -> None:
    provider = make_provider("failover", buckets=("rl", "paused", "quota", "auth", "tried"), rate=2.0)
    drain(provider, "rl", 0.0)  # 1 permit back after 0.5 s at 2/s
    pause(provider, "paused", 30.0)
    learner(provider, "quota").exhausted_until = 120.0
    learner(provider, "auth").disabled_until = 600.0
    error = exhausted(provider, request(exclude=("tried",)), now=0.0, timeout=0.1)
    assert error.fields["reasons"] == {
        "rl": "rate_limited",
        "paused": "paused",
        "quota": "quota_exhausted",
        "auth": "auth_failed",
        "tried": "excluded",
    }
    assert set(error.fields["reasons"].values()) == set(REASONS)
    assert error.fields["retry_after"] == pytest.approx(0.5)
    assert "rl: rate_limited" in error.message
    assert "retry in about 0.500 s" in error.message


def test_retry_after_is_the_earliest_return_when_nothing_is_merely_rate_limited() -> None:
    provider = make_provider("failover", buckets=("paused", "quota", "auth"))
    pause(provider, "paused", 30.0)
    learner(provider, "quota").exhausted_until = 20.0
    learner(provider, "auth").disabled_until = math.inf  # until reset: not a known return
    error = exhausted(provider, request(), now=5.0, timeout=1.0)
    assert error.fields["retry_after"] == pytest.approx(15.0)  # the quota resets at 20


def test_nothing_known_gives_no_retry_after() -> None:
    provider = make_provider("failover", buckets=("x", "y"))
    for name in ("x", "y"):
        learner(provider, name).disabled_until = math.inf
    error = exhausted(provider, request(), now=0.0, timeout=60.0)
    assert error.fields == {"reasons": {"x": "auth_failed", "y": "auth_failed"}}


def test_rate_limited_within_the_timeout_waits_beyond_it_is_exhausted() -> None:
    provider = make_provider("failover", buckets=("x", "y"), rate=1.0, burst=1.0)
    drain(provider, "x", 0.0)
    drain(provider, "y", 0.0)
    assert choose_bucket(provider, request(), 0.0, timeout=1.0).name == "x"
    error = exhausted(provider, request(), now=0.0, timeout=0.5)
    assert error.fields["reasons"] == {"x": "rate_limited", "y": "rate_limited"}
    assert error.fields["retry_after"] == pytest.approx(1.0)


def test_a_single_rate_limited_bucket_is_left_to_the_timeout_error() -> None:
    provider = make_provider("failover", buckets=("only",), burst=1.0)
    drain(provider, "only", 0.0)
    assert choose_bucket(provider, request(), 0.0, timeout=0.0).name == "only"
    learner(provider, "only").disabled_until = 50.0
    error = exhausted(provider, request(), now=0.0, timeout=0.0)
    assert error.fields == {"reasons": {"only": "auth_failed"}, "retry_after": 50.0}


def test_a_disabled_bucket_comes_back_at_its_deadline() -> None:
    provider = make_provider("failover", buckets=("x", "y"))
    learner(provider, "x").disabled_until = 600.0
    assert grant(provider, request(), now=599.0) == "y"
    assert grant(provider, request(), now=600.0) == "x"


# -- round robin ----------------------------------------------------------------------------------


def test_round_robin_rotates_over_ready_buckets() -> None:
    provider = make_provider("round_robin", rate=100.0, burst=100.0)
    chosen = [grant(provider, request(), now=0.0) for _ in range(7)]
    assert chosen == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_is_fair_over_many_calls_and_skips_unavailable_buckets() -> None:
    provider = make_provider("round_robin", buckets=("a", "b", "c", "d"), rate=10.0, burst=10.0)
    learner(provider, "c").disabled_until = math.inf
    counts: Counter[str] = Counter()
    now = 0.0
    for _ in range(3000):
        counts[grant(provider, request(), now=now, timeout=1.0)] += 1
        now += 0.1  # 10 calls/s spread over 3 keys of 10/s: never throttled
    assert counts == {"a": 1000, "b": 1000, "d": 1000}


def test_round_robin_under_load_serves_whoever_has_room() -> None:
    provider = make_provider("round_robin", buckets=("a", "b"), rate=1.0, burst=1.0)
    assert grant(provider, request(), now=0.0) == "a"
    assert grant(provider, request(), now=0.0) == "b"
    # Both empty: the soonest one (a, refilled first) within the timeout.
    assert choose_bucket(provider, request(), 0.5, timeout=1.0).name == "a"


# -- most headroom --------------------------------------------------------------------------------


def test_most_headroom_picks_the_fullest_bucket() -> None:
    provider = make_provider("most_headroom", rate=1.0, burst=10.0)
    limiter_a = provider.buckets["a"].limiter
    limiter_b = provider.buckets["b"].limiter
    limiter_c = provider.buckets["c"].limiter
    assert limiter_a.try_take({"requests": 6.0}, 0.0) == 0.0  # a: 4 left
    assert limiter_b.try_take({"requests": 2.0}, 0.0) == 0.0  # b: 8 left
    assert limiter_c.try_take({"requests": 5.0}, 0.0) == 0.0  # c: 5 left
    assert grant(provider, request(), now=0.0) == "b"
    chosen = [grant(provider, request(), now=0.0) for _ in range(5)]
    # The fullest each time; a tie goes to the first in configured order.
    assert chosen == ["b", "b", "b", "c", "a"]
    levels = {name: provider.buckets[name].limiter.units["requests"].available(0.0) for name in KEYS}
    assert levels == {"a": pytest.approx(3.0), "b": pytest.approx(4.0), "c": pytest.approx(4.0)}


def test_most_headroom_uses_the_tightest_unit() -> None:
    config = ProviderConfig(
        name="llm",
        limits=(
            LimitConfig(unit="requests", count=10.0, period=1.0, burst=10.0),
            LimitConfig(unit="tokens", count=1000.0, period=1.0, burst=1000.0),
        ),
        buckets=("x", "y"),
        selection="most_headroom",
    )
    provider = Provider(config, configured=True, now=0.0)
    provider.buckets["x"].limiter.try_take({"requests": 1.0, "tokens": 900.0}, 0.0)  # x: tokens 10% left
    provider.buckets["y"].limiter.try_take({"requests": 5.0, "tokens": 100.0}, 0.0)  # y: requests 50% left
    req = AcquireRequest(id=None, provider="llm", cost={"requests": 1.0}, timeout=None, exclude=frozenset())
    assert choose_bucket(provider, req, 0.0).name == "y"


def test_most_headroom_with_leases_reads_what_the_shared_buckets_have_left() -> None:
    """With the redis backend the limits grant from leases; their fill is the shared
    bucket's, as the last lease of each key reported it (the local GCRA alone reads full)."""
    provider = make_provider("most_headroom", rate=10.0, burst=100.0)
    settings = LeaseSettings(lease_time=0.1, max_share=0.1, fallback_share=0.5)
    leased_by_key = {}
    for name, left in (("a", 10.0), ("b", 80.0), ("c", 40.0)):
        bucket = provider.buckets[name]
        leased = LeasedLimiter.replacing(bucket.limiter, 0.0, settings, lambda: None, fallback=False)
        leased.credit({"requests": 5.0}, 0.0, {"requests": left})
        bucket.limiter = leased_by_key[name] = leased
    assert grant(provider, request(), now=0.0) == "b"
    leased_by_key["b"].denied(1.0, 0.0)  # b's store ran dry since: only its lease is left
    assert grant(provider, request(), now=0.0) == "c"
