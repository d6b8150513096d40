"""The delivery model (what the provider delivered) and how the adaptive policy uses it; plain times."""

from __future__ import annotations

import pytest

from ratelimitd.core.headers.parse import RateLimitHint
from ratelimitd.core.learning.adaptive import AdaptiveRules
from ratelimitd.core.learning.delivery import DeliveryModel
from ratelimitd.core.learning.learner import BucketLearner, LearningSettings, ReportEvent

OK = ReportEvent(status=200)


def successes(model: DeliveryModel, per_second: float, start: float, end: float) -> None:
    t = start
    while t < end:
        model.on_success(t)
        t += 1.0 / per_second


def test_steady_rate_is_successes_per_second_over_the_window() -> None:
    model = DeliveryModel(2.0)
    successes(model, 40.0, 0.0, 10.0)
    assert model.steady_rate(10.0, 50.0) == pytest.approx(40.0, abs=0.5)
    assert model.kept() <= 2.0 * 40 + 1  # bounded by the window


def test_a_pause_in_the_window_makes_the_reading_unsteady_but_one_starting_now_does_not() -> None:
    model = DeliveryModel(2.0)
    successes(model, 40.0, 0.0, 10.0)
    model.on_pause(10.0, 11.0)  # the 429 being judged at 10.0 started it
    assert model.steady_rate(10.0, 50.0) == pytest.approx(40.0, abs=0.5)
    successes(model, 40.0, 11.0, 12.0)
    assert model.steady_rate(12.0, 50.0) is None  # the provider refilled during the pause
    successes(model, 40.0, 12.0, 13.1)
    assert model.steady_rate(13.1, 50.0) == pytest.approx(40.0, abs=0.5)  # the pause is out


@pytest.mark.parametrize(
    ("per_second", "rate", "steady"), [(4.0, 4.0, False), (20.0, 50.0, False), (30.0, 50.0, True)]
)
def test_too_few_successes_or_under_half_the_rate_is_not_the_providers_rate(
    per_second: float, rate: float, steady: bool
) -> None:
    """A bucket whose callers ask for much less than its rate delivers what it was asked."""
    model = DeliveryModel(2.0)
    successes(model, per_second, 0.0, 5.0)
    assert (model.steady_rate(5.0, rate) is not None) == steady


def adaptive(**kw: object) -> BucketLearner:
    settings = LearningSettings(learning=True, recovery=True, **kw)  # type: ignore[arg-type]
    return BucketLearner(settings, 100.0, 0.0)


def deliver(bucket: BucketLearner, per_second: float, start: float, end: float) -> None:
    t = start
    while t < end:
        bucket.on_report(ReportEvent(status=200, permit=bucket.on_grant(t)), t)
        t += 1.0 / per_second


def test_a_drop_is_followed_to_under_what_the_provider_delivers_in_one_round() -> None:
    bucket = adaptive()
    deliver(bucket, 60.0, 0.0, 10.0)  # configured 100/s, the provider delivers 60/s
    decision = bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(10.0), retry_after=1.0), 10.0)
    assert decision.action == "reduced"
    assert bucket.factor == pytest.approx(0.6 * 0.97, abs=0.01)  # not the table's 10 % cut
    assert bucket.ceiling == pytest.approx(0.6, abs=0.01)  # 429s begin at what was delivered
    assert "delivered" in decision.reason


def test_known_noise_is_added_back_so_it_does_not_drag_the_rate_down() -> None:
    bucket = adaptive()
    bucket.rules.noise_share = 0.25  # a quarter of the answers are load-unrelated 429s
    deliver(bucket, 60.0, 0.0, 10.0)  # 60/s delivered of 80/s admitted
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(10.0), retry_after=1.0), 10.0)
    assert bucket.factor == pytest.approx(0.8 * 0.97, abs=0.01)
    assert bucket.ceiling == pytest.approx(0.8, abs=0.01)


def test_the_floor_holds_whatever_was_delivered() -> None:
    bucket = adaptive(floor_fraction=0.7)
    deliver(bucket, 55.0, 0.0, 10.0)
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(10.0), retry_after=1.0), 10.0)
    assert bucket.factor == pytest.approx(0.7)


def test_a_reading_across_a_pause_is_not_trusted_the_table_cuts_instead() -> None:
    bucket = adaptive()
    deliver(bucket, 60.0, 9.9, 10.0)  # too few successes for a reading: the table, and a pause
    decision = bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(10.0), retry_after=1.0), 10.0)
    assert decision.pause_until == 11.0
    first = bucket.factor
    deliver(bucket, 90.0, 11.0, 11.5)  # the burst the provider stored during the pause
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(11.5), retry_after=1.0), 11.5)
    assert bucket.factor == pytest.approx(first * 0.9)  # round 2 in a row: the table's 10 %
    assert bucket.ceiling == pytest.approx(first)  # the lowest rate a round began at


def test_a_return_is_found_by_the_probe_above_the_measured_ceiling() -> None:
    bucket = adaptive(recovery_quiet=1.0, recovery_plateau=10.0)
    deliver(bucket, 60.0, 0.0, 10.0)
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(10.0), retry_after=1.0), 10.0)
    level = bucket.factor
    for t in range(11, 60):  # the provider is back: no more 429s
        bucket.tick(float(t))
    assert bucket.factor == 1.0
    assert bucket.ceiling is None
    assert any(e.reason == "probe above the known ceiling" for e in bucket.history)
    assert level < 0.6


def test_a_cut_to_under_the_delivered_rate_needs_no_bucket_pause() -> None:
    """The cut itself drains the provider's bucket: its 429 and the late ones hold only their
    own requests."""
    bucket = adaptive()
    deliver(bucket, 60.0, 0.0, 10.0)  # configured 100/s, the provider delivers 60/s
    early = bucket.on_grant(9.99)  # granted before the cut, answered after it
    decision = bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(10.0), retry_after=1.0), 10.0)
    assert decision.action == "reduced"
    assert bucket.factor == pytest.approx(0.6 * 0.97, abs=0.01)
    assert decision.pause_until is None
    late = bucket.on_report(ReportEvent(status=429, permit=early, retry_after=1.0), 10.05)
    assert late.pause_until is None
    assert bucket.factor == pytest.approx(0.6 * 0.97, abs=0.01)  # a late answer cuts nothing


def test_a_cut_from_a_rate_the_provider_delivered_still_pauses() -> None:
    """A 429 at the rate the provider was delivering (the reading does not show a lower
    capacity yet): the table cuts deeper than the reading, and the bucket pauses."""
    bucket = adaptive()
    deliver(bucket, 100.0, 0.0, 10.0)  # delivered all it was sent
    decision = bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(10.0), retry_after=1.0), 10.0)
    assert bucket.factor == pytest.approx(0.9)
    assert decision.pause_until == 11.0


def test_with_a_known_noise_share_the_pauses_stay_the_judges_experiment() -> None:
    """Once some 429s were judged noise, a Retry-After's pause is how load is told from noise."""
    bucket = adaptive()
    bucket.rules.noise_share = 0.25
    deliver(bucket, 60.0, 0.0, 10.0)
    decision = bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(10.0), retry_after=1.0), 10.0)
    assert decision.action == "reduced"
    assert decision.pause_until == 11.0


def test_a_unit_at_zero_pauses_the_bucket_even_when_the_cut_goes_under_the_delivered_rate() -> None:
    bucket = adaptive()
    deliver(bucket, 60.0, 0.0, 10.0)
    hard = ReportEvent(
        status=429, permit=bucket.on_grant(10.0), retry_after=1.0,
        hint=RateLimitHint(remaining=0, reset_after=1.0),
    )  # fmt: skip
    decision = bucket.on_report(hard, 10.0)
    assert decision.action == "reduced"
    assert decision.pause_until == 11.0


def climbed_and_stepped_back(*, noise: float | None = None) -> tuple[AdaptiveRules, float]:
    """A round cut at 0 s, a recovery climb at 5 s, the climb's 429 at 8 s: (rules, factor)."""
    rules = AdaptiveRules(LearningSettings(learning=True, recovery=True), 0.0)
    rules.noise_share = noise
    cut = rules.on_rate_limit(1.0, 3, 1, 0.0, 0.2, 10, evidence=True)
    assert cut is not None
    climb = rules.tick(cut[0], 1.0, 5.0)
    assert climb is not None
    assert climb[0] == "recovered"
    back = rules.on_rate_limit(climb[1], 3, 20, 8.0, 0.2, 30, evidence=True)
    assert back is not None
    assert "after climbing" in back[1]
    return rules, back[0]


def test_429s_right_after_stepping_back_from_a_climb_still_answer_the_climb() -> None:
    """The climb emptied the provider's bucket: the level held before it meets 429s for a
    moment, and they need no whole-bucket pause (nor count as a drop)."""
    rules, factor = climbed_and_stepped_back()
    assert rules.stepping_up(11.0)  # the climb itself was 6 s ago: only the step back counts
    assert rules.expects_429s(factor, 0.2, 11.0)
    assert not rules.stepping_up(13.5)  # 5 s after the step back: a 429 is news again


def test_with_a_known_noise_share_a_step_back_leaves_the_pauses_to_the_judge() -> None:
    rules, _ = climbed_and_stepped_back(noise=0.1)
    assert not rules.stepping_up(11.0)
