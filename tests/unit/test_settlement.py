"""Settling a grant's estimated cost against what the call used: the ledger, the limiter, the
protocol's `used`, and the service on a fake clock (no socket, no sleeping)."""

from __future__ import annotations

import json
import tomllib
from typing import TYPE_CHECKING, Any

import pytest

from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.limiter import BucketLimiter, LimitSpec
from ratelimitd.core.protocol import ReportRequest, parse_request
from ratelimitd.core.settlement import GrantLedger, settlement
from ratelimitd.daemon.config import parse_config
from ratelimitd.daemon.service import PendingAcquire, Service

if TYPE_CHECKING:
    import asyncio

    from ratelimitd.daemon.clock import FakeClock

TOKENS = {"tokens": 1000.0}

# The scenario: 10,000 tokens a minute, calls estimated at 1,000 tokens.
CONFIG = """
[providers.llm]
limits = [{ unit = "tokens", rate = "10000/minute", burst = 10000 }]

[providers.both]
limits = [
  { unit = "requests", rate = "100/second", burst = 100 },
  { unit = "tokens", rate = "100/second", burst = 1000 },
]
"""


def _call(service: Service, **request: Any) -> Any:
    return service.handle(parse_request(json.dumps(request).encode(), max_timeout=3600.0))


@pytest.fixture
def service(loop: asyncio.AbstractEventLoop, fake_clock: FakeClock) -> Service:
    return Service(parse_config(tomllib.loads(CONFIG), {}, "test.toml"), fake_clock, loop)


# -- the ledger ---------------------------------------------------------------------------------


def test_the_ledger_gives_each_cost_once() -> None:
    ledger = GrantLedger()
    for permit in range(5):
        ledger.remember(permit, {"tokens": float(permit)}, now=0.0)
    assert ledger.take(3) == {"tokens": 3.0}
    assert ledger.take(3) is None  # settled already
    assert ledger.take(0) == {"tokens": 0.0}
    assert ledger.take(5) is None
    assert ledger.take(-1) is None


def test_the_ledger_keeps_grants_for_its_horizon_then_forgets_them() -> None:
    ledger = GrantLedger(keep=600.0)
    ledger.remember(1, TOKENS, now=0.0)
    ledger.remember(2, TOKENS, now=600.0)  # exactly 10 minutes later: 1 is still remembered
    assert ledger.take(1) == TOKENS
    ledger.remember(3, TOKENS, now=600.5)
    assert len(ledger) == 2  # 1 is now past the horizon
    assert ledger.take(2) == TOKENS


def test_the_ledger_is_bounded_in_entries() -> None:
    ledger = GrantLedger(max_entries=100)
    for permit in range(1000):
        ledger.remember(permit, TOKENS, now=0.0)
    assert len(ledger) == 100
    assert ledger.take(899) is None
    assert ledger.take(900) == TOKENS


def test_the_ledger_drops_what_it_forgot_and_still_finds_every_live_permit() -> None:
    ledger = GrantLedger(max_entries=2000)
    for permit in range(50_000):
        ledger.remember(permit, {"tokens": float(permit)}, now=0.0)
        # What it holds stays within an eighth (and a constant) of what it remembers.
        assert len(ledger._permits) <= 2000 + max(1024, 2000 // 8) + 1
    assert len(ledger) == 2000
    assert ledger.take(47_999) is None  # forgotten
    assert ledger.take(48_000) == {"tokens": 48_000.0}  # the oldest remembered
    assert ledger.take(49_999) == {"tokens": 49_999.0}
    # Found past the forgotten part when not contiguous, too.
    ledger.remember(60_000, TOKENS, now=0.0)
    assert ledger.take(60_000) == TOKENS
    assert ledger.take(59_999) is None


def test_the_ledger_finds_permits_that_are_not_contiguous() -> None:
    ledger = GrantLedger()
    for permit in (1, 2, 50, 51, 1000):
        ledger.remember(permit, {"tokens": float(permit)}, now=0.0)
    assert ledger.take(51) == {"tokens": 51.0}
    assert ledger.take(1000) == {"tokens": 1000.0}
    assert ledger.take(3) is None


def test_settlement_is_the_difference_per_unit_used() -> None:
    granted = {"requests": 1.0, "tokens": 1000.0}
    assert settlement(granted, {"tokens": 200.0}) == {"tokens": -800.0}
    assert settlement(granted, {"tokens": 1500.0, "images": 2.0}) == {"tokens": 500.0, "images": 2.0}


# -- the limiter --------------------------------------------------------------------------------


def test_giving_back_never_passes_a_full_burst() -> None:
    limiter = BucketLimiter({"tokens": LimitSpec(100.0, 1000.0)}, 0.0)
    assert limiter.try_take({"tokens": 1000.0}, 0.0) == 0.0
    limiter.settle({"tokens": -800.0}, 0.0)
    assert limiter.units["tokens"].available(0.0) == pytest.approx(800.0)
    limiter.settle({"tokens": -5000.0}, 0.0)
    assert limiter.units["tokens"].available(0.0) == pytest.approx(1000.0)


def test_using_more_than_granted_leaves_the_bucket_in_debt() -> None:
    limiter = BucketLimiter({"tokens": LimitSpec(100.0, 1000.0)}, 0.0)
    assert limiter.try_take({"tokens": 1000.0}, 0.0) == 0.0
    limiter.settle({"tokens": 500.0, "not-limited": 3.0}, 0.0)  # 1,500 used: 500 in debt
    assert limiter.units["tokens"].available(0.0) == pytest.approx(-500.0)
    # 100 more tokens once the debt and they are refilled: 6 s at 100/s.
    assert limiter.try_take({"tokens": 100.0}, 0.0) == pytest.approx(6.0)


# -- the protocol -------------------------------------------------------------------------------


def test_a_report_carries_used() -> None:
    line = b'{"op":"report","provider":"p","status":200,"permit":3,"used":{"tokens":812,"requests":0}}'
    request = parse_request(line, max_timeout=10.0)
    assert isinstance(request, ReportRequest)
    assert request.used == {"tokens": 812.0, "requests": 0.0}


@pytest.mark.parametrize(
    ("used", "message"),
    [
        ({"tokens": -1}, "used.tokens: must be a finite number >= 0, got -1"),
        ({"tokens": "812"}, "used.tokens: must be a number, got str"),
        ({"tokens": True}, "used.tokens: must be a number, got bool"),
        ({"tok ens": 1}, "used: unit names are 1-128 characters of A-Z a-z 0-9 . _ - :, got 'tok ens'"),
        ({}, "used: must be an object of unit -> number >= 0, naming at least one unit"),
        ([812], "used: must be an object of unit -> number >= 0, naming at least one unit"),
        ({f"u{i}": 1 for i in range(17)}, "used: at most 16 units, got 17"),
    ],
)
def test_bad_used_is_a_bad_request(used: Any, message: str) -> None:
    line = json.dumps({"op": "report", "provider": "p", "status": 200, "used": used}).encode()
    with pytest.raises(RatelimitdError) as info:
        parse_request(line, max_timeout=10.0)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.message == message


# -- the service --------------------------------------------------------------------------------


def test_a_unit_the_provider_does_not_limit_is_a_bad_request_and_counts_nothing(service: Service) -> None:
    permit = _call(service, op="acquire", provider="llm", cost=TOKENS)["permit"]
    with pytest.raises(RatelimitdError) as info:
        _call(service, op="report", provider="llm", status=200, permit=permit, used={"tokns": 200})
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.message == "used.tokns: provider 'llm' does not limit 'tokns' (units: tokens)"
    reports = service.statistics("llm")["llm"].buckets["default"].reports
    assert sum(reports.values()) == 0
    # The permit was not spent by the refused report.
    answer = _call(service, op="report", provider="llm", status=200, permit=permit, used={"tokens": 200})
    assert answer["settled"] is True


def test_settled_is_false_without_a_remembered_permit(service: Service) -> None:
    no_permit = _call(service, op="report", provider="llm", status=200, used={"tokens": 5})
    assert no_permit["settled"] is False
    unknown = _call(service, op="report", provider="llm", status=200, permit=12345, used={"tokens": 5})
    assert unknown["settled"] is False
    permit = _call(service, op="acquire", provider="llm", cost=TOKENS)["permit"]
    first = _call(service, op="report", provider="llm", status=200, permit=permit, used={"tokens": 5})
    assert first["settled"] is True
    again = _call(service, op="report", provider="llm", status=200, permit=permit, used={"tokens": 5})
    assert again["settled"] is False  # a grant settles once
    assert "settled" not in _call(service, op="report", provider="llm", status=200, permit=permit)


def _calls_in(service: Service, fake_clock: FakeClock, seconds: float, used: float | None) -> int:
    """Back-to-back calls of 1,000 estimated tokens for `seconds`, each reporting `used`."""
    end = fake_clock.monotonic() + seconds
    calls = 0
    while fake_clock.monotonic() < end:
        try:
            grant = _call(service, op="acquire", provider="llm", cost=TOKENS, timeout=0)
        except RatelimitdError as exc:
            if exc.code is not ErrorCode.TIMEOUT:
                raise
            fake_clock.advance(max(float(exc.fields["retry_after"]), 1e-3))
            continue
        calls += 1
        report: dict[str, Any] = {"op": "report", "provider": "llm", "status": 200, "permit": grant["permit"]}
        if used is not None:
            report["used"] = {"tokens": used}
        _call(service, **report)
    return calls


def test_settling_grants_about_five_times_more_calls_when_calls_use_a_fifth(
    service: Service, fake_clock: FakeClock
) -> None:
    estimated_only = _calls_in(service, fake_clock, 600.0, used=None)
    fake_clock.advance(60.0)  # refill
    settled = _calls_in(service, fake_clock, 600.0, used=200.0)
    # 10 a minute on estimates (+ the burst); 50 a minute on what was used.
    assert estimated_only == pytest.approx(10 + 100, abs=2)
    assert settled == pytest.approx(5 * estimated_only, rel=0.03)


def test_over_use_puts_the_bucket_in_debt_and_delays_the_next_grant(
    service: Service, loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    for _ in range(10):  # spend the burst of 10,000 tokens
        _call(service, op="acquire", provider="llm", cost=TOKENS)
    permit = _call(service, op="acquire", provider="llm", cost=TOKENS, timeout=60)
    assert isinstance(permit, PendingAcquire)  # waits 6 s for its 1,000 tokens
    fake_clock.advance(6.0)
    loop.run_until_complete(_settle_loop())
    grant = service.finish(permit)
    # It used 4,000 more than estimated: 24 s of refill in debt before 1,000 more tokens fit.
    _call(service, op="report", provider="llm", status=200, permit=grant["permit"], used={"tokens": 5000})
    with pytest.raises(RatelimitdError) as info:
        _call(service, op="acquire", provider="llm", cost=TOKENS, timeout=0)
    assert info.value.fields["retry_after"] == pytest.approx(30.0)


def test_a_give_back_serves_a_waiter_now(
    service: Service, loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    grants = [_call(service, op="acquire", provider="llm", cost=TOKENS) for _ in range(10)]
    waiting = _call(service, op="acquire", provider="llm", cost=TOKENS, timeout=60)
    assert isinstance(waiting, PendingAcquire)
    _call(service, op="report", provider="llm", status=200, permit=grants[0]["permit"], used={"tokens": 0})
    loop.run_until_complete(_settle_loop())
    assert waiting.waiter.future.done()
    assert service.finish(waiting)["waited"] == 0.0


async def _settle_loop() -> None:
    """Nothing: running it lets the loop's ready callbacks (a due timer) run once."""
