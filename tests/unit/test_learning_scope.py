"""Whom a Retry-After holds (bucket or request), with a fake clock: plain numbers for times.

A small provider answers the learner's grants: a hidden token bucket (429 + Retry-After until
its next token, as a real limit does) and a share of load-unrelated 429s that carry a
Retry-After too (a flaky upstream).
"""

from __future__ import annotations

import math
import random

from ratelimitd.core.headers.parse import RateLimitHint
from ratelimitd.core.learning.learner import BucketLearner, LearningSettings, ReportEvent
from ratelimitd.core.learning.scope import RetryAfterScope

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
