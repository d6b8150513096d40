"""What learning did, counted by direction and cause and logged once per event (service on a FakeClock).

Every cause a learner path can produce is driven through the real service here, so a change
of the learner's wording that `core.causes.cause_of` no longer recognises fails a test
instead of turning metric labels into "other".
"""

from __future__ import annotations

import json
import logging
import tomllib
from typing import TYPE_CHECKING, Any

import pytest

from ratelimitd.core.causes import BucketEvents, cause_of
from ratelimitd.core.protocol import parse_request
from ratelimitd.daemon.config import parse_config
from ratelimitd.daemon.service import Service

if TYPE_CHECKING:
    import asyncio

    from ratelimitd.core.providers import Bucket
    from ratelimitd.daemon.clock import FakeClock

CONFIG = """
[providers.api]
rate = "10/second"
burst = 10
"""
GATES = {
    "RATELIMITD_FEATURE_LEARNING": "1",
    "RATELIMITD_FEATURE_RECOVERY": "1",
    "RATELIMITD_FEATURE_PACING": "1",
}


@pytest.fixture
def service(loop: asyncio.AbstractEventLoop, fake_clock: FakeClock) -> Service:
    return Service(parse_config(tomllib.loads(CONFIG), GATES, "test.toml"), fake_clock, loop)


def call(service: Service, **request: Any) -> Any:
    return service.handle(parse_request(json.dumps(request).encode(), max_timeout=3600.0))


def bucket(service: Service) -> Bucket:
    return service.registry.providers["api"].buckets["default"]


def events(service: Service) -> BucketEvents:
    found: BucketEvents | None = bucket(service).events
    assert found is not None
    return found


def report(service: Service, status: int, *, acquire: bool = True, **fields: Any) -> dict[str, Any]:
    if acquire:
        fields["permit"] = call(service, op="acquire", provider="api", timeout=0)["permit"]
    answer: dict[str, Any] = call(service, op="report", provider="api", status=status, **fields)
    return answer


def event_lines(caplog: pytest.LogCaptureFixture, kind: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == kind]


def test_a_round_of_429s_is_a_cut_counted_and_logged_once(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert bucket(service).events is None  # made on the first event only
    actions = [report(service, 429)["action"] for _ in range(3)]
    assert actions == ["none", "none", "reduced"]
    assert events(service).changes == {("down", "429s"): 1}
    assert events(service).last_cause == "429s"
    (line,) = event_lines(caplog, "cut")
    assert (line.provider, line.bucket, line.reason, line.rate) == ("api", "default", "429s", 9.0)  # type: ignore[attr-defined]
    assert "api/default: rate cut to 9/s; 429s: round 1 of 429s" in line.getMessage()


def test_a_retry_after_pause_counts_its_seconds(
    service: Service, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    report(service, 429, retry_after=1.5)
    assert events(service).pauses == {"retry_after": 1}
    fake_clock.advance(0.5)
    assert events(service).paused_seconds(fake_clock.monotonic()) == pytest.approx(0.5)
    fake_clock.advance(5.0)
    # Shorter than any scrape interval, and still counted in full.
    assert events(service).paused_seconds(fake_clock.monotonic()) == pytest.approx(1.5)
    (line,) = event_lines(caplog, "pause")
    assert line.getMessage() == "api/default: paused for 1.5 s at 9/s; retry_after"


def test_an_announced_limit_is_not_a_429_cut(service: Service) -> None:
    # Announced 6 per second against a configured 10: lowered, with zero 429s.
    report(service, 200, headers={"RateLimit-Policy": '"default";q=6;w=1', "RateLimit": '"default";r=5;t=1'})
    assert events(service).changes == {("down", "announced_limit"): 1}
    assert bucket(service).reports["429"] == 0


def test_remaining_zero_holds_until_the_reset_as_pacing(service: Service) -> None:
    report(service, 200, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"})
    assert events(service).pauses == {"pacing": 1}


def test_quota_overload_and_auth(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    report(service, 503)
    assert events(service).pauses == {"overload": 1}
    report(service, 429, acquire=False, reason="insufficient_quota")
    assert events(service).last_cause == "quota"
    assert len(event_lines(caplog, "quota")) == 1
    call(service, op="reset", provider="api")
    assert events(service).resets == 1
    report(service, 401, acquire=False)
    assert events(service).last_cause == "auth"
    (line,) = event_lines(caplog, "disabled")
    assert line.reason == "auth"  # type: ignore[attr-defined]


def test_recovery_and_reset_raise_the_rate(service: Service, fake_clock: FakeClock) -> None:
    for _ in range(4):
        report(service, 429)
    assert events(service).changes == {("down", "429s"): 2}
    for _ in range(40):
        fake_clock.advance(1.0)
        service.tick()
    assert events(service).changes.get(("up", "recovery"), 0) >= 1
    for _ in range(4):
        report(service, 429)
    call(service, op="reset", provider="api")
    assert events(service).changes[("up", "reset")] == 1
    assert events(service).last_cause == "reset"


@pytest.mark.parametrize(
    ("reason", "state", "cause"),
    [
        ("429 share 0.120 is noise", "ok", "noise_undone"),
        (
            "429 share right after pauses did not fall: noise with Retry-After, cuts undone",
            "ok",
            "noise_undone",
        ),
        ("retry_after 1s holds its request only (judged load-unrelated)", "ok", "retry_after"),
        ("round 3 of 429s: cut 20% of the current rate", "cooling_down", "429s"),
        ("streak 3: 10 points off", "cooling_down", "429s"),
        ("insufficient_quota", "exhausted", "quota"),
        ("something new", "ok", "other"),
    ],
)
def test_cause_of_reads_the_learner_words(reason: str, state: str, cause: str) -> None:
    assert cause_of(reason, state=state) == cause


IDLE = """
[server]
idle_ttl = 60.0

[providers.api]
rate = "10/second"
"""


def test_idle_providers_created_on_first_use_are_dropped(
    loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    service = Service(parse_config(tomllib.loads(IDLE), {}, "test.toml"), fake_clock, loop)
    dropped: list[str] = []
    service.on_drop = lambda b: dropped.append(f"{b.provider}/{b.name}")
    for name in ("typo", "busy", "api"):
        call(service, op="acquire", provider=name)
    assert service.drop_idle() == []  # first look: activity recorded
    for _ in range(3):
        fake_clock.advance(30.0)
        call(service, op="acquire", provider="busy")
        service.drop_idle()
    assert "typo" not in service.registry.providers
    assert dropped == ["typo/default"]
    assert set(service.registry.providers) == {"api", "busy"}  # configured ones stay, idle or not
    fake_clock.advance(61.0)
    service.drop_idle()
    assert set(service.registry.providers) == {"api"}
    again = call(service, op="acquire", provider="typo")  # comes back as new on first use
    assert again["ok"] is True


def test_idle_ttl_zero_keeps_every_provider(loop: asyncio.AbstractEventLoop, fake_clock: FakeClock) -> None:
    service = Service(
        parse_config(tomllib.loads(IDLE.replace("60.0", "0")), {}, "test.toml"), fake_clock, loop
    )
    call(service, op="acquire", provider="typo")
    for _ in range(3):
        fake_clock.advance(1e6)
        assert service.drop_idle() == []
    assert "typo" in service.registry.providers


def test_a_climb_during_a_pause_does_not_hide_the_pause_reason(
    service: Service, fake_clock: FakeClock
) -> None:
    for _ in range(3):
        report(service, 429)
    report(service, 429, acquire=False, retry_after=60)
    assert events(service).last_cause == "retry_after"
    climbs = events(service).changes.get(("up", "recovery"), 0)
    for _ in range(30):
        fake_clock.advance(1.0)
        service.tick()
    assert events(service).changes.get(("up", "recovery"), 0) > climbs  # it climbs meanwhile ...
    assert events(service).last_cause == "retry_after"  # ... and the reason stays the pause's
