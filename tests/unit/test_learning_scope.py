"""Whom a Retry-After holds (bucket or request), with a fake clock: plain numbers for times.

A small provider answers the learner's grants: a hidden token bucket (429 + Retry-After until
its next token, as a real limit does) and a share of load-unrelated 429s that carry a
Retry-After too (a flaky upstream).
"""

from __future__ import annotations

import math
import random

import pytest

from ratelimitd.core.headers.parse import RateLimitHint
from ratelimitd.core.learning.learner import BucketLearner, LearningSettings, ReportEvent
from ratelimitd.core.learning.scope import MIN_ALL, RetryAfterScope

RATE = 50.0  # the configured rate, requests/s


class Provider:
    def __init__(self, rate: float, noise: float, seed: int = 1) -> None:
        self.rate = rate
        self.noise = noise
        self.tokens = rate * 0.25
        self.updated = 0.0
        self.rng = random.Random(seed)

    def answer(self, t: float, permit: int) -> ReportEvent:
        self.tokens = min(self.rate * 0.25, self.tokens + (t - self.updated) * self.rate)
        self.updated = t
        if self.tokens < 1.0:
            wait = float(max(1, math.ceil((1.0 - self.tokens) / self.rate)))
            return ReportEvent(status=429, permit=permit, retry_after=wait)
        self.tokens -= 1.0
        if self.rng.random() < self.noise:
            return ReportEvent(status=429, permit=permit, retry_after=1.0)
        return ReportEvent(status=200, permit=permit)


def adaptive(scope: str = "auto") -> BucketLearner:
    settings = LearningSettings(learning=True, recovery=True, retry_after_scope=scope)  # type: ignore[arg-type]
    return BucketLearner(settings, RATE, 0.0)


def drive(learner: BucketLearner, provider: Provider, start: float, end: float) -> tuple[int, int]:
    """Send at the learner's rate, never during its pause; (successes, bucket pauses)."""
    t, successes, pauses = start, 0, 0
    while t < end:
        learner.tick(t)
        pause = learner.pause_until
        if pause is not None and pause > t:
            t = pause
            continue
        event = provider.answer(t, learner.on_grant(t))
        decision = learner.on_report(event, t)
        successes += event.status == 200
        pauses += (
            decision.pause_until is not None and decision.pause_until > t and pause != decision.pause_until
        )
        t += 1.0 / (RATE * learner.factor)
    return successes, pauses


def now_in_force(learner: BucketLearner) -> tuple[str, str]:
    """(scope, reason), read through a call: the scope changes as the learner runs."""
    return learner.retry_after_scope.scope, learner.retry_after_scope.reason


def test_noise_with_retry_after_does_not_collapse_the_rate() -> None:
    learner = adaptive()
    provider = Provider(rate=RATE * 2, noise=0.1)  # no real limit in reach: every 429 is noise
    drive(learner, provider, 0.0, 60.0)
    scope = learner.retry_after_scope
    assert scope.scope == "request"
    assert "right after pauses" in scope.reason
    assert learner.factor == 1.0  # the cuts made before the verdict were undone
    successes, pauses = drive(learner, provider, 60.0, 120.0)
    assert pauses == 0  # a noise 429 holds only its own request now
    assert successes >= 0.85 * RATE * 60  # 10 % of the answers are noise: at most 0.9
    decision = learner.on_report(
        ReportEvent(status=429, permit=learner.on_grant(120.0), retry_after=1.0), 120.0
    )
    assert decision.pause_until is None
    assert "holds its request only" in decision.reason


def test_a_real_limit_with_retry_after_pauses_the_bucket_at_once() -> None:
    learner = adaptive()
    decision = learner.on_report(ReportEvent(status=429, permit=learner.on_grant(0.0), retry_after=2.0), 0.0)
    assert decision.pause_until == 2.0  # the whole bucket, at once (and the rate is cut)
    assert decision.action == "reduced"
    provider = Provider(rate=RATE / 2, noise=0.0)  # a hidden limit at half the configured rate
    _, pauses = drive(learner, provider, 2.0, 60.0)
    assert pauses >= 1
    assert learner.retry_after_scope.scope == "bucket"  # requests right after pauses got through
    assert 0.4 <= learner.factor <= 0.55  # followed down to the provider's rate


def test_a_provider_that_turns_from_noise_to_a_real_limit_gets_bucket_pauses_again() -> None:
    learner = adaptive()
    drive(learner, Provider(rate=RATE * 2, noise=0.1), 0.0, 60.0)
    assert learner.retry_after_scope.scope == "request"
    limited = Provider(rate=RATE * 0.4, noise=0.1, seed=2)  # capacity drops to 20/s
    reasons: list[tuple[str, str]] = []
    factors: list[float] = []
    for second in range(60, 120):
        drive(learner, limited, second, second + 1.0)
        reasons.append(now_in_force(learner))
        factors.append(learner.factor)
    back = [reason for scope, reason in reasons[:10] if scope == "bucket"]
    assert back, "the share rose: within 10 s a Retry-After pauses the bucket again"
    assert "429 share rose" in back[0]
    # The rate followed the provider down to 20/s (0.4): over the last 30 s it stays near it
    # (recovery probes above it and steps back, so one moment's factor says little).
    assert 0.3 <= sum(factors[-30:]) / 30 <= 0.55


def test_a_unit_at_zero_pauses_the_bucket_even_when_retry_after_holds_requests() -> None:
    learner = adaptive("request")
    noise = learner.on_report(ReportEvent(status=429, permit=learner.on_grant(0.0), retry_after=1.0), 0.0)
    assert noise.pause_until is None
    hard = ReportEvent(
        status=429,
        permit=learner.on_grant(0.1),
        retry_after=3.0,
        hint=RateLimitHint(remaining=0, reset_after=3.0),
    )
    assert learner.on_report(hard, 0.1).pause_until == 3.1


def test_configured_scopes_never_change() -> None:
    for setting in ("bucket", "request"):
        learner = adaptive(setting)
        drive(learner, Provider(rate=RATE * 2, noise=0.1), 0.0, 30.0)
        assert learner.retry_after_scope.scope == setting
        assert learner.retry_after_scope.describe() == {
            "scope": setting, "setting": setting, "why": f"configured: {setting}",
        }  # fmt: skip


def test_heads_without_429s_keep_the_bucket_scope() -> None:
    scope = RetryAfterScope("auto")
    permit = 0
    for _ in range(30):  # 30 pauses; every request right after a pause succeeds
        scope.on_pause(permit)
        for _ in range(8):
            permit += 1
            scope.observe(permit, limited=False)
        permit += 1
        scope.observe(permit, limited=True)  # later in the round: the limit again
    assert scope.scope == "bucket"
    assert scope.verdict == "load"
    assert "track load" in scope.reason


def judge_noise(scope: RetryAfterScope, permit: int, pauses: int, per_pause: int, every: int) -> int:
    """`pauses` pauses, each followed by `per_pause` answers (heads first), 1 in `every` a 429."""
    for _ in range(pauses):
        scope.on_pause(permit)
        for i in range(per_pause):
            permit += 1
            scope.observe(permit, limited=i % every == 0)
    return permit


def in_force(scope: RetryAfterScope) -> str:
    """The scope now, read through a call (it changes as answers arrive)."""
    return scope.scope


@pytest.mark.parametrize("follows_rate", [True, False])
def test_a_noise_share_judged_again_from_a_few_answers_keeps_the_one_judged_before(
    follows_rate: bool,
) -> None:
    """Only for a rate that follows the provider down: a static rate stays above the capacity."""
    scope = RetryAfterScope("auto", follows_rate=follows_rate)
    permit = judge_noise(scope, 0, pauses=20, per_pause=10, every=10)  # 10 % after every pause
    assert in_force(scope) == "request"
    judged = scope.noise_share
    assert 0.05 <= judged <= 0.25
    while in_force(scope) == "request" and permit < 1000:  # the capacity drops: 80 % 429s
        permit += 1
        scope.observe(permit, limited=permit % 5 != 0)
    assert in_force(scope) == "bucket"
    # Right after the drop the rate is still above the new capacity: the few answers the
    # judge sees (a third 429s) say more about the overshoot than about the noise.
    assert MIN_ALL > 16
    permit = judge_noise(scope, permit, pauses=2, per_pause=8, every=3)
    assert in_force(scope) == "request"
    assert (scope.noise_share == judged) == follows_rate
    # From enough answers, a share judged again replaces the one judged before.
    while in_force(scope) == "request" and permit < 2000:
        permit += 1
        scope.observe(permit, limited=True)
    assert in_force(scope) == "bucket"
    judge_noise(scope, permit, pauses=2, per_pause=MIN_ALL + 20, every=4)
    assert in_force(scope) == "request"
    assert scope.noise_share == pytest.approx(0.25, abs=0.06)


def test_a_rise_of_the_429_share_cuts_to_what_the_provider_delivers() -> None:
    """Noise judged at 50/s, then the capacity drops to 20/s: the first cut after the rise
    goes straight under the delivered rate (20/s, under half the rate), not 10 %."""
    learner = adaptive()
    drive(learner, Provider(rate=RATE * 2, noise=0.1), 0.0, 60.0)
    assert learner.retry_after_scope.scope == "request"
    assert learner.factor == 1.0
    drive(learner, Provider(rate=RATE * 0.4, noise=0.1, seed=2), 60.0, 70.0)
    cuts = [e for e in learner.history if e.kind == "reduced" and e.at_monotonic >= 60.0]
    assert cuts
    first = cuts[0]
    assert first.factor_before == 1.0
    assert "delivered" in first.reason
    # About 20/s of 50/s (the 2 s read still holds a little from before the drop); without
    # the delivered rate, the first cut would be 10 %.
    assert 0.3 <= first.factor_after <= 0.55
