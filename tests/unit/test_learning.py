"""BucketLearner rules with plain numbers for times."""

from __future__ import annotations

import itertools
import math

import pytest

from ratelimitd.core.headers.parse import RateLimitHint
from ratelimitd.core.learning.adaptive import streak_points
from ratelimitd.core.learning.learner import BucketLearner, LearningSettings, ReportEvent
from ratelimitd.core.learning.persist import restore, snapshot

ON = {"learning": True, "recovery": True}
LIMITED = ReportEvent(status=429)
OK = ReportEvent(status=200)


def learner(policy: str = "adaptive", rate: float = 100.0, **kw: object) -> BucketLearner:
    settings = LearningSettings(policy=policy, **{**ON, **kw})  # type: ignore[arg-type]
    return BucketLearner(settings, rate, 0.0)


@pytest.mark.parametrize(
    ("streak", "points"), [(1, 0), (2, 0), (3, 10), (4, 10), (5, 20), (9, 20), (10, 30), (40, 30)]
)
def test_streak_points_table(streak: int, points: int) -> None:
    assert streak_points(streak) == points


@pytest.mark.parametrize(
    ("count", "factor"),
    [(1, 1.0), (2, 1.0), (3, 0.9), (4, 0.8), (5, 0.6), (6, 0.4), (7, 0.2), (8, 0.2), (20, 0.2)],
)
def test_streak_cuts_cumulatively_to_at_most_80_percent(count: int, factor: float) -> None:
    bucket = learner("streak")
    for i in range(count):
        bucket.on_report(LIMITED, float(i))
    assert bucket.factor == pytest.approx(factor)
    assert bucket.streak == count


def test_streak_success_resets_streak_not_cuts() -> None:
    bucket = learner("streak")
    for i in range(3):
        bucket.on_report(LIMITED, float(i))
    bucket.on_report(OK, 3.0)
    assert bucket.streak == 0
    assert bucket.factor == pytest.approx(0.9)
    for i in range(2):
        bucket.on_report(LIMITED, 4.0 + i)
    assert bucket.factor == pytest.approx(0.9)  # streak 1-2 again: nothing
    assert bucket.tick(1000.0) is None or bucket.factor == pytest.approx(0.9)  # never recovers


@pytest.mark.parametrize(("rate", "floor"), [(100.0, 0.2), (3.0, 1 / 3), (0.5, 1.0)])
def test_floor_20_percent_and_1_rps(rate: float, floor: float) -> None:
    bucket = learner("streak", rate=rate)
    for i in range(30):
        bucket.on_report(LIMITED, float(i))
    assert bucket.factor == pytest.approx(floor)
    adaptive = learner(rate=rate)
    for i in range(60):
        adaptive.on_report(ReportEvent(status=429, permit=adaptive.on_grant(i)), float(i) * 10)
    assert adaptive.factor == pytest.approx(floor)


def test_history_bounded_to_50() -> None:
    bucket = learner("streak")
    for i in range(200):
        bucket.on_report(ReportEvent(status=429, retry_after=1.0), float(i) * 2)
    assert len(bucket.history) == 50
    assert bucket.history[-1].at_monotonic == 398.0


def test_adaptive_one_cut_per_round_late_429s_ignored() -> None:
    bucket = learner()
    permits = [bucket.on_grant(0.0) for _ in range(30)]
    for p in permits[:3]:
        bucket.on_report(ReportEvent(status=429, permit=p), 0.1)
    assert bucket.factor == pytest.approx(0.9)
    for p in permits[3:]:  # granted before the cut: late answers to the old rate
        bucket.on_report(ReportEvent(status=429, permit=p), 0.2)
    assert bucket.factor == pytest.approx(0.9)
    assert bucket.rules.is_fresh(permits[-1], 0.2) is False
    fresh = bucket.on_grant(0.3)
    bucket.on_report(ReportEvent(status=429, permit=fresh), 0.4)  # new evidence
    assert bucket.factor < 0.9


@pytest.mark.parametrize(("at", "cuts_again"), [(0.5, False), (0.99, False), (1.0, True)])
def test_adaptive_time_window_without_permits(at: float, cuts_again: bool) -> None:
    bucket = learner()
    for _ in range(3):
        bucket.on_report(LIMITED, 0.0)
    assert bucket.factor == pytest.approx(0.9)
    bucket.on_report(LIMITED, at)
    assert (bucket.factor < 0.9) is cuts_again


def test_recovery_schedule_climbs_to_ceiling_then_probes() -> None:
    bucket = learner(recovery_quiet=5.0, recovery_gain=0.3, recovery_plateau=10.0)
    for i in range(3):
        bucket.on_report(LIMITED, float(i) * 0.01)
    bucket.on_report(OK, 0.1)
    for i in range(3):
        bucket.on_report(LIMITED, 2.0 + i * 0.01)  # second round: 0.9 -> 0.81
    assert bucket.factor == pytest.approx(0.81)
    assert bucket.ceiling == pytest.approx(0.9)
    assert bucket.tick(5.0) is None  # quiet period not over
    factors = []
    for t in range(8, 40):
        bucket.tick(float(t))
        factors.append(round(bucket.factor, 4))
    knee = 0.9 * 0.97
    assert factors[0] == pytest.approx(0.81 + 0.3 * (knee - 0.81), abs=1e-4)
    assert max(factors[:10]) == pytest.approx(knee, abs=1e-3)
    assert factors[-1] == pytest.approx(1.0)  # probes doubled past the ceiling to the top
    assert factors == sorted(factors)
    assert bucket.state(40.0) == "ok"


def test_no_recovery_without_the_gate() -> None:
    bucket = learner(recovery=False)
    for i in range(3):
        bucket.on_report(LIMITED, float(i) * 0.01)
    for t in range(1, 100):
        bucket.tick(float(t))
    assert bucket.factor == pytest.approx(0.9)
    assert bucket.state(100.0) == "cooling_down"


def test_noise_is_learned_and_cut_undone() -> None:
    bucket = learner(recovery=False, noise_window=5.0)
    t = 0.0
    # Independent 429s at 10%: pattern of nine successes then one 429, plus three in a row once.
    for i in range(100):
        status = 429 if i % 10 == 9 else 200
        bucket.on_report(ReportEvent(status=status), t)
        t += 0.02
    for _ in range(3):
        bucket.on_report(LIMITED, t)
        t += 0.02
    assert bucket.factor == pytest.approx(0.9)
    for i in range(100):
        bucket.on_report(ReportEvent(status=429 if i % 10 == 9 else 200), t)
        t += 0.05
    bucket.tick(t)
    assert bucket.rules.noise_share == pytest.approx(0.1)
    assert bucket.factor == pytest.approx(1.0)
    for _ in range(3):  # streaks at the noise share no longer cut
        bucket.on_report(LIMITED, t)
        t += 0.02
    assert bucket.factor == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("retry_after", "pause"), [(2.0, 2.0), (0.25, 0.25), (10_000.0, 300.0), (None, None)]
)
def test_retry_after_pauses_capped(retry_after: float | None, pause: float | None) -> None:
    for policy in ("static", "streak", "adaptive"):
        bucket = learner(policy, learning=False)
        decision = bucket.on_report(ReportEvent(status=429, retry_after=retry_after), 10.0)
        expected = None if pause is None else 10.0 + pause
        assert bucket.pause_until == expected
        # adaptive: a 429 with Retry-After is the provider's evidence: one round, one cut.
        cut = policy == "adaptive" and pause is not None
        assert decision.action == ("reduced" if cut else "none" if pause is None else "paused")
        if pause is not None:
            assert bucket.state(10.0) == "paused"
            assert bucket.tick(10.0 + pause) is not None
            assert bucket.state(10.0 + pause) == "ok"


def test_retry_after_from_hint() -> None:
    bucket = learner()
    bucket.on_report(ReportEvent(status=429, hint=RateLimitHint(retry_after=3.0)), 1.0)
    assert bucket.pause_until == 4.0


@pytest.mark.parametrize(
    "event",
    [
        ReportEvent(status=429, reason="insufficient_quota"),
        ReportEvent(status=429, reason="billing_hard_limit_reached"),
        ReportEvent(status=429, hint=RateLimitHint(remaining=0, reset_after=7200.0)),
        ReportEvent(status=403, hint=RateLimitHint(remaining=0, reset_after=1800.0)),
    ],
)
def test_quota_parks_until_reset_without_cut(event: ReportEvent) -> None:
    bucket = learner()
    for _ in range(5):
        bucket.on_report(event, 0.0)
    assert bucket.factor == 1.0
    assert bucket.state(1.0) == "exhausted"
    until = bucket.exhausted_until
    assert until is not None
    assert until >= 1800.0
    bucket.tick(until)
    assert bucket.state(until) == "ok"


def test_github_403_with_remaining_0_soon_is_a_rate_limit() -> None:
    bucket = learner()
    hint = RateLimitHint(remaining=0, reset_after=30.0)
    for _ in range(3):
        bucket.on_report(ReportEvent(status=403, hint=hint), 0.0)
    assert bucket.state(0.0) != "disabled"
    assert bucket.factor == pytest.approx(0.9)


@pytest.mark.parametrize("status", [503, 529])
def test_overload_pauses_briefly_no_cut(status: int) -> None:
    bucket = learner(overload_pause=2.0)
    decision = bucket.on_report(ReportEvent(status=status), 1.0)
    for _ in range(4):
        bucket.on_report(ReportEvent(status=status), 1.0)
    assert decision.action == "paused"
    assert (bucket.factor, bucket.pause_until, bucket.streak) == (1.0, 3.0, 0)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_disables(status: int) -> None:
    bucket = learner(disable_for=600.0)
    decision = bucket.on_report(ReportEvent(status=status), 1.0)
    assert (decision.action, decision.state) == ("disabled", "disabled")
    assert bucket.disabled_until == 601.0
    bucket.tick(601.0)
    assert bucket.state(601.0) == "ok"
    forever = learner(disable_for=0.0)
    forever.on_report(ReportEvent(status=status), 1.0)
    assert forever.disabled_until == math.inf
    forever.reset(2.0)
    assert forever.state(2.0) == "ok"


def test_shadow_mode_computes_but_does_not_apply() -> None:
    bucket = learner("streak", learning=False)
    for i in range(5):
        bucket.on_report(LIMITED, float(i))
    bucket.on_report(ReportEvent(status=401), 6.0)
    assert bucket.factor == 1.0
    assert bucket.shadow_factor == pytest.approx(0.6)
    assert bucket.state(7.0) == "ok"
    assert bucket.shadow_state(7.0) == "disabled"


def test_static_never_changes_rate() -> None:
    bucket = learner("static")
    for i in range(50):
        bucket.on_report(LIMITED, float(i))
    assert (bucket.factor, bucket.shadow_factor, bucket.state(60.0)) == (1.0, 1.0, "ok")


def test_success_resets_streak_and_permits_increase() -> None:
    bucket = learner()
    assert [bucket.on_grant(0.0) for _ in range(3)] == [1, 2, 3]
    bucket.on_report(LIMITED, 0.0)
    bucket.on_report(OK, 0.0)
    assert bucket.streak == 0


def test_reset_forgets_cuts_and_pauses() -> None:
    bucket = learner()
    bucket.on_grant(0.0)
    for _ in range(3):
        bucket.on_report(ReportEvent(status=429, retry_after=30.0), 0.0)
    bucket.reset(1.0)
    assert (bucket.factor, bucket.streak, bucket.pause_until, bucket.ceiling) == (1.0, 0, None, None)
    assert bucket.state(1.0) == "ok"
    assert bucket.history[-1].kind == "reset"
    assert bucket.on_grant(1.0) == 2


@pytest.mark.parametrize(("stale_for", "factor"), [(0.0, 0.6), (900.0, 0.8), (1800.0, 0.9)])
def test_snapshot_restore_decays_cuts(stale_for: float, factor: float) -> None:
    settings = LearningSettings(policy="streak", learning=True, decay_half_life=900.0)
    bucket = BucketLearner(settings, 100.0, 0.0)
    for i in range(5):
        bucket.on_report(ReportEvent(status=429, retry_after=100.0), float(i))
    data = snapshot(bucket, 10.0, 1_700_000_000.0)
    assert data["paused_until"] == pytest.approx(1_700_000_000.0 + 94.0)
    restored = restore(settings, 100.0, data, 500.0, 1_700_000_050.0, stale_for)
    assert restored.factor == pytest.approx(factor)
    assert restored.pause_until == pytest.approx(544.0)  # still 44 s of the pause left
    assert len(restored.history) == len(bucket.history) + 1


def test_a_file_from_before_the_streak_rename_restores_its_points() -> None:
    settings = LearningSettings(policy="streak", learning=True)
    bucket = BucketLearner(settings, 100.0, 0.0)
    for i in range(5):
        bucket.on_report(ReportEvent(status=429), float(i))
    data = snapshot(bucket, 10.0, 1_700_000_000.0)
    assert data["streak_points"] == 40
    old = {("seed_points" if key == "streak_points" else key): value for key, value in data.items()}
    restored = restore(settings, 100.0, old, 10.0, 1_700_000_000.0, 0.0)
    assert restored.factor == pytest.approx(0.6)
    restored.on_report(ReportEvent(status=429), 11.0)  # streak 6: 20 more points off
    assert restored.factor == pytest.approx(0.4)


def test_restore_rejects_unknown_version() -> None:
    with pytest.raises(ValueError, match="version"):
        restore(LearningSettings(), 10.0, {"version": 99}, 0.0, 0.0, 0.0)


def test_pacing_announced_limit_and_holds() -> None:
    hint = RateLimitHint(limit=50.0, window=1.0, remaining=40.0, reset_after=0.2)
    capped = learner(pacing=True, rate=30.0)
    capped.on_report(ReportEvent(status=200, hint=hint), 0.0)
    assert capped.factor == 1.0  # above configured only when allowed
    above = learner(pacing=True, rate=30.0, allow_above_configured=True)
    above.on_report(ReportEvent(status=200, hint=hint), 0.0)
    assert above.factor == pytest.approx(50 / 30)
    lower = learner(pacing=True, rate=100.0)
    lower.on_report(ReportEvent(status=200, hint=hint), 0.0)
    assert lower.factor == pytest.approx(0.5)
    empty = RateLimitHint(limit=50.0, window=1.0, remaining=0.0, reset_after=0.8)
    decision = lower.on_report(ReportEvent(status=200, hint=empty), 1.0)
    assert (decision.hold_until, lower.pause_until) == (1.8, 1.8)
    low = RateLimitHint(limit=100.0, window=60.0, remaining=5.0, reset_after=10.0)
    paced = learner(pacing=True, rate=10.0)
    decision = paced.on_report(ReportEvent(status=200, hint=low), 0.0)
    assert decision.pace_factor == pytest.approx(0.2)  # 5 left over 10 s = 0.5/s, floor 2/10
    paced.tick(10.0)
    assert paced.factor == pytest.approx(100 / 60 / 10)


def test_pacing_off_ignores_headers() -> None:
    bucket = learner(rate=30.0, allow_above_configured=True)
    hint = RateLimitHint(limit=50.0, window=1.0, remaining=0.0, reset_after=5.0)
    bucket.on_report(ReportEvent(status=200, hint=hint), 0.0)
    assert (bucket.factor, bucket.pause_until) == (1.0, None)


def test_adaptive_retry_after_is_evidence_without_a_streak() -> None:
    bucket = learner()
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(0.0)), 0.0)
    assert bucket.factor == 1.0  # a lone 429 without evidence: streak 1, nothing
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(0.0), retry_after=1.0), 0.1)
    assert bucket.factor == pytest.approx(0.9)
    assert bucket.ceiling == pytest.approx(1.0)


def test_adaptive_429_near_the_ceiling_goes_back_under_it() -> None:
    bucket = learner(recovery_quiet=1.0, recovery_plateau=100.0)
    for t in (0.0, 0.1):  # two rounds in a row: 1.0 -> 0.9 -> 0.81, ceiling 0.9
        bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(t), retry_after=1.0), t)
    assert bucket.factor == pytest.approx(0.81)
    assert bucket.ceiling == pytest.approx(0.9)
    for t in range(2, 30):
        bucket.tick(float(t))
    knee = 0.9 * 0.97
    assert bucket.factor == pytest.approx(knee)  # climbed to 97% of the ceiling, held there
    # Later (not in a row with the first rounds), 429s at the knee: the ceiling is lower.
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(30.0), retry_after=1.0), 30.0)
    assert bucket.ceiling == pytest.approx(knee)
    assert bucket.factor == pytest.approx(knee * 0.97)


def _round_then_quiet(bucket: BucketLearner, until: int) -> None:
    """Two rounds in a row (1.0 -> 0.9 -> 0.81, ceiling 0.9), then ticks every second."""
    for t in (0.0, 0.1):
        bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(t), retry_after=1.0), t)
    for t in range(1, until):
        bucket.tick(float(t))


def test_a_climb_that_overshoots_goes_back_to_the_level_held_before_it() -> None:
    bucket = learner(recovery_quiet=5.0, recovery_plateau=100.0, recovery_gain=0.9)
    _round_then_quiet(bucket, 7)  # quiet from 0.1: the first climb step at 6 s
    assert bucket.factor == pytest.approx(0.81 + 0.9 * (0.9 * 0.97 - 0.81))
    # 429s right after the climb step (6.4 s after the last cut: "in a row" by time alone,
    # which would cut 20 %): the climb overshot, back to 0.81, held quietly before it.
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(6.5), retry_after=1.0), 6.5)
    assert bucket.factor == pytest.approx(0.81)
    assert bucket.history[-1].reason.startswith("429s after climbing")
    # The next round soon after is a first round again: under the (lower) ceiling, no 20 % cut.
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(8.0), retry_after=1.0), 8.0)
    assert bucket.factor == pytest.approx(0.81 * 0.97)
    assert bucket.rules.rounds == 1
    # A second step back in a row means the provider really is lower: the streak table's cuts again.
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(9.0), retry_after=1.0), 9.0)
    assert bucket.factor == pytest.approx(0.81 * 0.97 * 0.9)


def test_a_level_held_quietly_after_a_climb_steps_down_under_the_new_ceiling() -> None:
    """Not back to before the climb: the climbed-to level held for a while, it was good then."""
    bucket = learner(recovery_quiet=1.0, recovery_plateau=100.0)
    _round_then_quiet(bucket, 30)
    knee = 0.9 * 0.97
    assert bucket.factor == pytest.approx(knee)
    bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(30.0), retry_after=1.0), 30.0)
    assert bucket.factor == pytest.approx(knee * 0.97)  # not back to 0.81


def test_lone_429s_without_evidence_do_not_hold_recovery_back() -> None:
    """Below a streak of 3 and without Retry-After a 429 is no signal, not even to wait.

    (Before, a 10 % random 429 every few seconds kept the quiet period from ever passing: a
    bucket cut at start-up stayed at 0.81 for minutes in scenario (c).)
    """
    bucket = learner(recovery_quiet=5.0, recovery_plateau=100.0)
    for t in (0.0, 0.1):  # start-up congestion, with Retry-After: 1.0 -> 0.9 -> 0.81
        bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(t), retry_after=1.0), t)
    for t in range(1, 30):
        bucket.on_report(OK, t + 0.5)
        bucket.on_report(LIMITED, t + 0.6)  # a lone evidence-less 429 every second: streak 1
        bucket.tick(float(t))
    assert bucket.factor == pytest.approx(0.9 * 0.97)  # climbed back under the ceiling
    # Streaks of 3 are rounds, a signal: recovery waits for a quiet period that never comes.
    held = learner(recovery_quiet=5.0, recovery_plateau=100.0)
    for t in (0.0, 0.1):
        held.on_report(ReportEvent(status=429, permit=held.on_grant(t), retry_after=1.0), t)
    for t in range(1, 30):
        held.on_report(OK, t + 0.5)
        held.on_report(ReportEvent(status=429, permit=held.on_grant(t + 0.6)), t + 0.6)
        held.on_report(ReportEvent(status=429, permit=held.on_grant(t + 0.7)), t + 0.7)
        held.on_report(ReportEvent(status=429, permit=held.on_grant(t + 0.8)), t + 0.8)
        held.tick(float(t))
    assert held.factor <= 0.81 + 1e-9  # streaks of 3 every second: never quiet, no climb


def test_success_times_stay_bounded_without_any_429() -> None:
    """Hours of successes and no 429: the delivered-rate window must not keep them all."""
    bucket = learner()
    window = bucket.settings.delivery_window
    for i in range(100_000):  # 100 s at 1,000 successes per second
        bucket.on_report(OK, i / 1000.0)
    kept = bucket.rules.delivery.kept()
    assert kept <= window * 1000 + 1
    assert kept >= window * 1000 - 1  # the window itself is still there to be read


def _noisy(bucket: BucketLearner, start: float, count: int, step: float) -> float:
    """`count` reports, every tenth a 429 (independent noise at 10 %); returns the next time."""
    t = start
    for i in range(count):
        bucket.on_report(ReportEvent(status=429 if i % 10 == 9 else 200), t)
        t += step
    return t


def test_noise_is_learned_after_a_small_cut_under_the_ceiling() -> None:
    bucket = learner(recovery=False, noise_window=5.0)
    for i in range(3):  # a first round before any sample: 0.9, too few reports to judge
        bucket.on_report(LIMITED, i * 0.01)
    t = _noisy(bucket, 0.1, 400, 0.05)  # 20 s at 10 % noise: nothing cuts (streaks of 1)
    bucket.tick(t)
    assert bucket.factor == pytest.approx(0.9)
    for _ in range(3):  # a round, not in a row: only back under the ceiling (3 %)
        bucket.on_report(LIMITED, t)
        t += 0.02
    assert bucket.factor == pytest.approx(0.9 * 0.97)
    t = _noisy(bucket, t, 200, 0.05)
    bucket.tick(t)
    # The share did not fall after the 3 % cut: noise, although the cut was small.
    assert bucket.rules.noise_share == pytest.approx(0.1, abs=0.01)
    assert bucket.factor == pytest.approx(0.9)


def test_first_probe_goes_10_percent_up_and_a_held_one_climbs_fast() -> None:
    bucket = learner(recovery_quiet=1.0, recovery_plateau=10.0)
    for t in (0.0, 0.1, 0.2):  # three rounds in a row: 1.0 -> 0.9 -> 0.81 -> 0.648
        bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(t), retry_after=1.0), t)
    assert bucket.ceiling == pytest.approx(0.81)
    factors = {}
    for t in range(1, 60):
        bucket.tick(float(t))
        factors[t] = round(bucket.factor, 4)
    knee = 0.81 * 0.97
    reached = min(t for t, f in factors.items() if f == pytest.approx(knee, abs=1e-4))
    jump = min(t for t, f in factors.items() if f > knee + 1e-4)
    assert jump - reached >= 10  # the plateau
    # Straight to 10 % above the level held through the plateau: holding it proves more.
    assert factors[jump] == pytest.approx(knee * 1.1, abs=1e-4)
    assert factors[jump + 4] == factors[jump]  # held 5 s
    forgot = jump + 5
    assert bucket.ceiling is None or factors[forgot] > factors[jump]
    # Then one doubling step per second (not per 3 s) to the top.
    assert factors[forgot] == pytest.approx(knee * 1.1 + 0.02, abs=1e-4)
    assert factors[forgot + 1] == pytest.approx(knee * 1.1 + 0.02 + 0.04, abs=1e-4)
    assert factors[forgot + 2] == pytest.approx(1.0)  # capped at the top
    assert bucket.ceiling is None


def test_a_held_probe_goes_straight_back_to_the_level_the_provider_allowed_before() -> None:
    """Like CUBIC's fast return to W_max: no doubling steps up to where it was fine before."""
    bucket = learner(recovery_quiet=1.0, recovery_plateau=10.0)
    for t in range(20):  # 1.0 held 20 s without a 429
        bucket.on_report(OK, float(t))
        bucket.tick(float(t))
    _three_rounds(bucket, 20.0)  # the provider dropped: 0.648, ceiling 0.81
    factors = {}
    for t in range(21, 80):
        bucket.tick(float(t))
        factors[t] = round(bucket.factor, 4)
    knee = 0.81 * 0.97
    jump = min(t for t, f in factors.items() if f > knee + 1e-4)
    assert factors[jump] == pytest.approx(knee * 1.1, abs=1e-4)  # the probe, held 5 s
    assert factors[jump + 4] == factors[jump]
    assert factors[jump + 5] == 1.0  # back where it was, in one step
    assert bucket.history[-1].reason.startswith("the provider allows more")


def test_a_return_to_the_old_level_that_fails_is_not_probed_every_few_seconds() -> None:
    """A partial return: the jump back fails, the old level is spent, probes slow down."""
    bucket = learner(recovery_quiet=1.0, recovery_plateau=10.0)
    for t in range(20):  # 1.0 held 20 s
        bucket.on_report(OK, float(t))
        bucket.tick(float(t))
    _three_rounds(bucket, 20.0)
    t = 21
    while bucket.factor < 0.99:  # climb, plateau, a held probe, the jump back to 1.0
        bucket.tick(float(t))
        t += 1
    assert bucket.history[-1].reason.startswith("the provider allows more")
    for dt in (0.5, 0.6, 0.7):  # the provider came back only part of the way: 429s at 1.0
        bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(t + dt), retry_after=1.0), t + dt)
    probes = _failed_probes(bucket, t + 1, t + 200)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert gaps[:2] == pytest.approx([22.0, 42.0], abs=1.0)  # 20, 40 s plateaus, not 10 s


def _failed_probes(bucket: BucketLearner, start: float, end: float) -> list[float]:
    """Tick every second; answer every step past the ceiling with a fresh 429 (Retry-After 1 s)."""
    probes: list[float] = []
    for t in range(int(start), int(end)):
        ceiling = bucket.ceiling
        bucket.tick(float(t))
        if ceiling is not None and bucket.factor > ceiling + 1e-9:
            probes.append(float(t))
            event = ReportEvent(status=429, permit=bucket.on_grant(t + 0.5), retry_after=1.0)
            bucket.on_report(event, t + 0.5)
    return probes


def _three_rounds(bucket: BucketLearner, start: float) -> None:
    for t in (start, start + 0.1, start + 0.2):  # 1.0 -> 0.9 -> 0.81 -> 0.648, ceiling 0.81
        bucket.on_report(ReportEvent(status=429, permit=bucket.on_grant(t), retry_after=1.0), t)


def test_a_ceiling_that_keeps_holding_is_probed_rarely() -> None:
    """Each failed probe doubles the plateau, up to 160 s (not 20 s) when nothing more held."""
    bucket = learner(recovery_quiet=1.0, recovery_plateau=10.0)
    _three_rounds(bucket, 0.0)
    assert bucket.ceiling == pytest.approx(0.81)
    probes = _failed_probes(bucket, 1.0, 1000.0)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    # gap = the plateau after the failed probe + 1 s quiet + the probe's 1 s (pause, then tick)
    plateaus = [20.0, 40.0, 80.0, 160.0, 160.0, 160.0]
    assert gaps[: len(plateaus)] == pytest.approx([p + 3.0 for p in plateaus], abs=1.0)
    assert max(gaps) <= 160.0 + 4.0
    assert bucket.ceiling == pytest.approx(0.81)


def test_a_provider_that_allowed_more_recently_is_probed_often() -> None:
    """A level 10 % past the ceiling held a plateau: the plateau stays at 10 s (no doubling)."""
    bucket = learner(recovery_quiet=1.0, recovery_plateau=10.0)
    for t in range(20):  # 1.0 held 20 s without a 429: the provider allowed it
        bucket.on_report(OK, float(t))
        bucket.tick(float(t))
    _three_rounds(bucket, 20.0)
    probes = _failed_probes(bucket, 21.0, 20.2 + 160.0)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert len(gaps) >= 5
    assert max(gaps) <= 10.0 + 4.0  # the 10 s plateau + quiet + the probe's hold
    # After `recovery_plateau_long` (160 s) of the same ceiling, it is the new normal: the
    # plateau doubles on to 160 s.
    later = _failed_probes(bucket, 20.2 + 160.0, 800.0)
    later_gaps = [b - a for a, b in itertools.pairwise(later)]
    assert later_gaps[:3] == pytest.approx([22.0, 42.0, 82.0], abs=1.0)  # 20, 40, 80 s


@pytest.mark.parametrize("policy", ["static", "streak", "adaptive"])
def test_learn_says_none_for_a_success_that_changes_nothing_the_limiter_follows(policy: str) -> None:
    bucket = learner(policy)
    assert bucket.learn(OK, 1.0) is None
    assert bucket.on_report(OK, 2.0).action == "none"  # the same report, as a Decision


def test_learn_decides_on_what_a_success_changed_and_on_every_failure() -> None:
    bucket = learner("streak")
    for i in range(3):
        assert bucket.learn(LIMITED, float(i)) is not None  # a 429 always decides
    assert bucket.streak == 3
    assert bucket.learn(OK, 4.0) is None  # the streak ends; the cut stays (streak policy)
    assert bucket.streak == 0
    assert bucket.factor == pytest.approx(0.9)
    paced = learner(pacing=True)
    assert paced.learn(OK, 1.0) is not None  # with pacing, a success's headers may pace
