"""The ops, transport-agnostic, on a FakeClock: no socket, no sleeping.

The service needs a loop for its futures and timers; the loop here is never left running
on its own and its `time` is the fake clock, so a waiter's deadline fires exactly when the
fake clock passes it (`run_due`).
"""

from __future__ import annotations

import random
import tomllib
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from support import run_due

from ratelimitd import __version__
from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.protocol import AcquireRequest, parse_object, parse_request
from ratelimitd.core.selection import choose_bucket
from ratelimitd.daemon.config import Config, parse_config
from ratelimitd.daemon.service import TICK_SLICE, PendingAcquire, Service
from ratelimitd.daemon.status import StatusSlices

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from ratelimitd.daemon.clock import FakeClock

CONFIG = """
[server]
default_timeout = 10.0
max_waiters = 5

[providers.fast]
rate = "10/second"
burst = 1

[providers.multi]
limits = [
  { unit = "requests", rate = "10/second", burst = 10 },
  { unit = "tokens", rate = "100/second", burst = 100 },
]

[providers.keys]
rate = "10/second"
burst = 1
buckets = ["a", "b"]
"""


def config_of(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(tomllib.loads(text), environ or {}, "test.toml")


@pytest.fixture
def make_service(loop: asyncio.AbstractEventLoop, fake_clock: FakeClock) -> Callable[..., Service]:
    def make(text: str = CONFIG, environ: dict[str, str] | None = None) -> Service:
        return Service(config_of(text, environ), fake_clock, loop)

    return make


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service()


def call(service: Service, **request: Any) -> Any:
    import json

    result = service.handle(parse_request(json.dumps(request).encode(), max_timeout=3600.0))
    if isinstance(result, StatusSlices):  # the line the transport would write, piece by piece
        return orjson.loads(b"".join(result))
    return result


def fails(service: Service, code: ErrorCode, **request: Any) -> RatelimitdError:
    with pytest.raises(RatelimitdError) as info:
        call(service, **request)
    assert info.value.code is code, info.value
    return info.value


def bucket_json(service: Service, provider: str, bucket: str = "default") -> dict[str, Any]:
    status: dict[str, Any] = call(service, op="status", provider=provider)["providers"][provider]["buckets"][
        bucket
    ]
    return status


def test_hello_and_ping(make_service: Callable[..., Service]) -> None:
    service = make_service(CONFIG, {"RATELIMITD_FEATURE_LEARNING": "1"})
    hello = call(service, op="hello", id=1)
    assert hello["id"] == 1
    assert (hello["server"], hello["version"], hello["protocol"]) == ("ratelimitd", __version__, 1)
    assert hello["features"]["learning"] is True
    assert hello["features"]["persist"] is False
    assert call(service, op="ping", id="p") == {"id": "p", "ok": True}


def test_an_acquire_that_fits_is_granted_at_once(service: Service) -> None:
    first = call(service, op="acquire", provider="multi", id=1)
    assert first == {
        "id": 1,
        "ok": True,
        "provider": "multi",
        "bucket": "default",
        "waited": 0.0,
        "rate": 10.0,
        "permit": first["permit"],
    }
    second = call(service, op="acquire", provider="multi", cost={"requests": 2, "tokens": 50})
    assert second["permit"] > first["permit"]
    assert bucket_json(service, "multi")["granted"] == 2


def test_a_waiting_acquire_is_granted_by_the_queue(
    service: Service, loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    call(service, op="acquire", provider="fast")
    pending = call(service, op="acquire", provider="fast", id="w")
    assert isinstance(pending, PendingAcquire)
    assert service.waiting() == 1
    assert bucket_json(service, "fast")["waiters"] == 1
    fake_clock.advance(0.1)
    run_due(loop)
    assert pending.waiter.future.done()
    granted = service.finish(pending)
    assert granted["id"] == "w"
    assert granted["waited"] == pytest.approx(0.1)
    assert service.waiting() == 0
    assert bucket_json(service, "fast")["granted"] == 2


def test_an_acquire_that_cannot_be_served_in_time_fails_now(service: Service) -> None:
    call(service, op="acquire", provider="fast")
    error = fails(service, ErrorCode.TIMEOUT, op="acquire", provider="fast", timeout=0.05)
    assert error.fields["retry_after"] == pytest.approx(0.1)
    assert "0.100" in error.message
    zero = fails(service, ErrorCode.TIMEOUT, op="acquire", provider="fast", timeout=0)
    assert zero.fields["retry_after"] == pytest.approx(0.1)
    assert bucket_json(service, "fast")["timeouts"] == 2
    assert service.waiting() == 0


def test_a_waiter_whose_deadline_passes_gets_timeout(
    service: Service, loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    call(service, op="acquire", provider="fast")
    pending = call(service, op="acquire", provider="fast", timeout=0.5)
    assert isinstance(pending, PendingAcquire)
    # The rate is cut while it waits (as learning or a reload may do): the grant moves past 0.5 s.
    bucket = service.registry.providers["fast"].buckets["default"]
    bucket.limiter.set_scale(0.01, fake_clock.monotonic())
    bucket.queue.reschedule()
    fake_clock.advance(0.5)
    run_due(loop)
    with pytest.raises(RatelimitdError) as info:
        service.finish(pending)
    assert info.value.code is ErrorCode.TIMEOUT
    assert info.value.fields["retry_after"] > 1.0
    assert bucket_json(service, "fast")["timeouts"] == 1
    assert service.waiting() == 0


def test_an_abandoned_waiter_consumes_nothing(
    service: Service, loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    call(service, op="acquire", provider="fast")
    gone = call(service, op="acquire", provider="fast")
    stays = call(service, op="acquire", provider="fast")
    assert isinstance(gone, PendingAcquire)
    assert isinstance(stays, PendingAcquire)
    service.abandon(gone)
    assert gone.waiter.future.cancelled()
    fake_clock.advance(0.1)
    run_due(loop)
    assert service.finish(stays)["waited"] == pytest.approx(0.1)  # it took the abandoned turn
    assert bucket_json(service, "fast")["granted"] == 2


def test_max_waiters(service: Service) -> None:
    call(service, op="acquire", provider="fast")
    for _ in range(5):
        assert isinstance(call(service, op="acquire", provider="fast"), PendingAcquire)
    error = fails(service, ErrorCode.TIMEOUT, op="acquire", provider="fast")
    assert "max_waiters" in error.message
    assert error.fields["retry_after"] == pytest.approx(0.6)


def test_cost_too_large_names_the_unit_and_its_burst(service: Service) -> None:
    error = fails(service, ErrorCode.COST_TOO_LARGE, op="acquire", provider="multi", cost={"tokens": 101})
    assert error.message == "cost: 101 tokens can never be granted by 'multi', whose burst is 100 tokens"
    fails(service, ErrorCode.COST_TOO_LARGE, op="acquire", provider="fast", cost=2)
    assert bucket_json(service, "multi")["granted"] == 0


def test_providers_created_on_demand_up_to_max_providers(make_service: Callable[..., Service]) -> None:
    service = make_service('[server]\nmax_providers = 2\n[providers.one]\nrate = "1/s"\n')
    granted = call(service, op="acquire", provider="made")
    assert granted["rate"] == 10.0  # the built-in default limits
    assert call(service, op="status")["providers"]["made"]["configured"] is False
    error = fails(service, ErrorCode.TOO_MANY_PROVIDERS, op="acquire", provider="another")
    assert "max_providers (2)" in error.message
    assert set(call(service, op="status")["providers"]) == {"one", "made"}


def test_unknown_provider_when_not_created_on_demand(make_service: Callable[..., Service]) -> None:
    service = make_service('[server]\ncreate_providers = false\n[providers.one]\nrate = "1/s"\n')
    for op, extra in (("acquire", {}), ("report", {"status": 200}), ("status", {}), ("reset", {})):
        error = fails(service, ErrorCode.UNKNOWN_PROVIDER, op=op, provider="nope", **extra)
        assert "'nope'" in error.message


def test_all_buckets_exhausted_with_reasons(service: Service) -> None:
    error = fails(service, ErrorCode.ALL_BUCKETS_EXHAUSTED, op="acquire", provider="keys", exclude=["a", "b"])
    assert error.fields["reasons"] == {"a": "excluded", "b": "excluded"}
    assert call(service, op="acquire", provider="keys", exclude=["a"])["bucket"] == "b"


def test_report_counts_and_streaks(service: Service) -> None:
    replies = [call(service, op="report", provider="keys", bucket="a", status=429) for _ in range(3)]
    reply = replies[-1]
    assert reply["streak"] == 3
    assert reply["bucket"] == "a"
    assert call(service, op="report", provider="keys", bucket="a", status=200)["streak"] == 0
    call(service, op="report", provider="keys", bucket="a", status="network_error")
    call(service, op="report", provider="keys", bucket="a", status=503)
    call(service, op="report", provider="keys", bucket="a", status=404)
    reports = bucket_json(service, "keys", "a")["reports"]
    assert reports == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "429": 3, "5xx": 1, "network_error": 1}
    assert bucket_json(service, "keys", "b")["reports"]["429"] == 0
    error = fails(service, ErrorCode.BAD_REQUEST, op="report", provider="keys", bucket="zz", status=200)
    assert error.message.startswith("bucket: ")


def test_status_of_one_and_of_all(service: Service) -> None:
    everything = call(service, op="status")["providers"]
    assert set(everything) == {"fast", "multi", "keys"}
    multi = bucket_json(service, "multi")
    assert multi["limits"]["tokens"] == {
        "rate": 100.0,
        "baseline": 100.0,
        "period": 1.0,
        "burst": 100.0,
        "shadow_rate": 100.0,
    }
    assert multi["state"] == "ok"
    assert multi["paused_until"] is None


def test_reset(service: Service) -> None:
    call(service, op="report", provider="keys", bucket="b", status=429)
    assert call(service, op="reset", provider="keys", bucket="b")["buckets"] == ["b"]
    assert bucket_json(service, "keys", "b")["streak"] == 0
    assert call(service, op="reset", provider="keys")["buckets"] == ["a", "b"]
    fails(service, ErrorCode.BAD_REQUEST, op="reset", provider="keys", bucket="zz")
    fails(service, ErrorCode.UNKNOWN_PROVIDER, op="reset", provider="never-seen")


def test_shut_down_answers_waiters_and_refuses_new_work(service: Service) -> None:
    call(service, op="acquire", provider="fast")
    waiters = [call(service, op="acquire", provider="fast") for _ in range(3)]
    service.shut_down()
    for pending in waiters:
        with pytest.raises(RatelimitdError) as info:
            service.finish(pending)
        assert info.value.code is ErrorCode.SHUTTING_DOWN
    assert service.waiting() == 0
    fails(service, ErrorCode.SHUTTING_DOWN, op="acquire", provider="multi")
    fails(service, ErrorCode.SHUTTING_DOWN, op="report", provider="multi", status=200)
    fails(service, ErrorCode.SHUTTING_DOWN, op="reset", provider="multi")
    assert call(service, op="ping")["ok"] is True
    assert call(service, op="hello")["ok"] is True
    assert call(service, op="status")["ok"] is True


def test_reload_changes_rates_and_keeps_waiters(
    service: Service, loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    call(service, op="acquire", provider="fast")
    pending = call(service, op="acquire", provider="fast")
    assert isinstance(pending, PendingAcquire)
    service.reload(
        config_of(CONFIG.replace('rate = "10/second"\nburst = 1', 'rate = "100/second"\nburst = 1', 1))
    )
    assert bucket_json(service, "fast")["limits"]["requests"]["rate"] == 100.0
    fake_clock.advance(0.01)  # at the new rate the next permit is 10 ms away, not 100
    run_due(loop)
    assert service.finish(pending)["waited"] == pytest.approx(0.01)


def test_reload_keeps_how_full_a_bucket_is(service: Service) -> None:
    for _ in range(10):
        call(service, op="acquire", provider="multi")
    service.reload(config_of(CONFIG))
    fails(service, ErrorCode.TIMEOUT, op="acquire", provider="multi", timeout=0)


def test_reload_that_removes_a_provider_or_bucket_answers_its_waiters(service: Service) -> None:
    call(service, op="acquire", provider="fast")
    on_fast = call(service, op="acquire", provider="fast")
    call(service, op="acquire", provider="keys", exclude=["b"])
    on_a = call(service, op="acquire", provider="keys", exclude=["b"])
    assert isinstance(on_fast, PendingAcquire)
    assert isinstance(on_a, PendingAcquire)
    without = CONFIG.replace('[providers.fast]\nrate = "10/second"\nburst = 1\n', "").replace(
        'buckets = ["a", "b"]', 'buckets = ["b"]'
    )
    service.reload(config_of(without))
    for pending in (on_fast, on_a):
        with pytest.raises(RatelimitdError) as info:
            service.finish(pending)
        assert info.value.code is ErrorCode.UNKNOWN_PROVIDER
        assert "removed by a reload" in info.value.message
    assert set(call(service, op="status")["providers"]) == {"multi", "keys"}
    assert set(call(service, op="status", provider="keys")["providers"]["keys"]["buckets"]) == {"b"}


def test_a_rate_cut_during_a_pause_keeps_the_pause_deadline(
    make_service: Callable[..., Service], fake_clock: FakeClock
) -> None:
    """Retry-After holds the bucket until its deadline; a cut meanwhile neither stretches nor ends it."""
    # The streak policy pauses on the first 429 and cuts only from the third: a cut mid-pause.
    service = make_service(CONFIG, {"RATELIMITD_FEATURE_LEARNING": "1", "RATELIMITD_POLICY": "streak"})
    assert call(service, op="acquire", provider="fast", timeout=0)["ok"]
    paused = call(service, op="report", provider="fast", status=429, retry_after=2)
    bucket = service.registry.providers["fast"].buckets["default"]
    assert bucket.pauses == 1
    assert bucket.limiter.scale == 1.0
    deadline = bucket.learner.pause_until
    assert deadline == pytest.approx(fake_clock.monotonic() + 2)
    for _ in range(4):  # a streak of 429s cuts the rate while the pause lasts
        call(service, op="report", provider="fast", status=429)
    assert bucket.limiter.scale < 1.0, paused
    assert bucket.reductions >= 1
    # Nothing before the deadline; at the deadline, one emission interval at the new rate.
    rate = bucket.limiter.rate("requests")
    assert rate is not None
    expected = deadline - fake_clock.monotonic() + 1 / rate
    assert bucket.limiter.delay_for({"requests": 1.0}, fake_clock.monotonic()) == pytest.approx(expected)


def test_shadow_mode_reports_what_was_done_not_what_the_policy_would_do(service: Service) -> None:
    """Learning off: a 429 with Retry-After pauses (always on) but never cuts the rate."""
    assert call(service, op="acquire", provider="fast", timeout=0)["ok"]
    answers = [call(service, op="report", provider="fast", status=429, retry_after=3) for _ in range(12)]
    assert answers[0]["action"] == "paused"
    assert {answer["action"] for answer in answers[1:]} <= {"none", "paused"}
    assert {answer["rate"] for answer in answers} == {10.0}
    bucket = service.registry.providers["fast"].buckets["default"]
    assert bucket.reductions == 0
    assert bucket.limiter.scale == 1.0
    assert bucket.learner.shadow_factor < 1.0  # what turning learning on would have done
    status = bucket_json(service, "fast")
    assert status["state"] == "paused"
    assert status["limits"]["requests"]["shadow_rate"] < status["limits"]["requests"]["rate"]


def test_malformed_headers_never_fail_a_report_and_are_counted(service: Service) -> None:
    answer = call(
        service,
        op="report",
        provider="fast",
        status=429,
        headers={"Retry-After": "soon-ish", "x-ratelimit-remaining-requests": "-3"},
    )
    assert answer["ok"] is True
    status = bucket_json(service, "fast")
    assert status["malformed_headers"] == 2
    assert status["state"] == "ok"  # an unparsable Retry-After pauses nothing


def test_a_wait_past_max_pause_without_evidence_is_capped_and_counted(service: Service) -> None:
    # Prisjakt's documented 429 (developer.prisjakt.nu/docs/sections/rate-limit): the reset is
    # in milliseconds; read as seconds it is a week, which parked the bucket as a spent quota.
    headers = {"X-Rate-Limit-Limit": "10000", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "600000"}
    answer = call(service, op="report", provider="fast", status=429, headers=headers)
    assert answer["ok"] is True
    status = bucket_json(service, "fast")
    assert status["suspicious_headers"] == 1
    assert status["state"] != "exhausted"
    # The same numbers with the report's quota reason are believed: no count.
    call(service, op="report", provider="fast", status=429, headers=headers, reason="insufficient_quota")
    assert bucket_json(service, "fast")["suspicious_headers"] == 1


KEYS = """
[providers.fo]
rate = "2/second"
burst = 2
buckets = ["a", "b", "c"]
selection = "failover"

[providers.rr]
rate = "2/second"
burst = 2
buckets = ["a", "b", "c"]
selection = "round_robin"

[providers.mh]
limits = [
  { unit = "requests", rate = "2/second", burst = 2 },
  { unit = "tokens", rate = "50/second", burst = 100 },
]
buckets = ["a", "b", "c"]
selection = "most_headroom"

[providers.one]
rate = "2/second"
burst = 2
"""


def _reference_acquire(service: Service, request: dict[str, Any]) -> str:
    """The bucket the one-path acquire must pick: `choose_bucket`, then a grant now or not."""
    parsed = parse_object(dict(request), max_timeout=60.0)
    assert isinstance(parsed, AcquireRequest)
    now = service.clock.monotonic()
    provider = service.registry.providers[parsed.provider]
    try:
        bucket = choose_bucket(provider, parsed, now, 0.0)
    except RatelimitdError as exc:
        return exc.code.value
    if not bucket.queue.live and bucket.limiter.try_take(parsed.cost, now) == 0.0:
        bucket.granted += 1
        return bucket.name
    return "timeout"


def _acquire(service: Service, request: dict[str, Any]) -> str:
    try:
        answer = call(service, **request)
    except RatelimitdError as exc:
        return exc.code.value
    assert isinstance(answer, dict)
    return str(answer["bucket"])


@pytest.mark.parametrize("learning", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_one_acquire_path_picks_what_choose_bucket_picks(
    make_service: Callable[..., Service], fake_clock: FakeClock, learning: bool, seed: int
) -> None:
    """Random acquires (costs, excludes), reports (429 with Retry-After, 401, 5xx) and time
    steps on two services: the acquire path and the reference pick the same buckets."""
    environ = {"RATELIMITD_FEATURE_LEARNING": "1"} if learning else {}
    ours, reference = make_service(KEYS, environ), make_service(KEYS, environ)
    rng = random.Random(seed)
    picks: list[str] = []
    for _ in range(300):
        provider = rng.choice(["fo", "rr", "mh", "one"])
        buckets = ["default"] if provider == "one" else ["a", "b", "c"]
        roll = rng.random()
        if roll < 0.15:
            report: dict[str, Any] = {"op": "report", "provider": provider, "bucket": rng.choice(buckets)}
            report["status"] = rng.choice([200, 429, 429, 401, 503])
            if rng.random() < 0.5:
                report["retry_after"] = rng.choice([0.2, 1.0, 5.0])
            assert call(ours, **report) == call(reference, **report)
        elif roll < 0.25:
            fake_clock.advance(rng.choice([0.05, 0.3, 1.0, 3.0]))
            ours.tick()
            reference.tick()
        else:
            request: dict[str, Any] = {"op": "acquire", "provider": provider, "timeout": 0}
            if rng.random() < 0.3:
                request["exclude"] = rng.sample(buckets, rng.randint(1, len(buckets)))
            if provider == "mh" and rng.random() < 0.5:
                request["cost"] = {"requests": 1, "tokens": rng.choice([10, 60])}
            pick = _acquire(ours, request)
            assert pick == _reference_acquire(reference, request), (seed, len(picks), request)
            picks.append(pick)
    assert len(set(picks)) >= 4, picks  # grants on several keys, and refusals


def _many(count: int) -> str:
    return CONFIG + "".join(f'[providers.m{i:03d}]\nrate = "1/s"\n' for i in range(count))


def test_status_pages_walk_every_provider_in_name_order_once(make_service: Callable[..., Service]) -> None:
    service = make_service(_many(120))
    everyone = call(service, op="status")["providers"]
    assert len(everyone) == 123  # more than two slices of the written answer
    seen: list[str] = []
    after = None
    while True:
        page = call(service, op="status", limit=50, after=after, id=1)
        assert page["id"] == 1
        assert len(page["providers"]) <= 50
        seen.extend(page["providers"])
        after = page["next"]
        if after is None:
            break
        assert after == seen[-1]
    assert seen == sorted(everyone)
    assert "next" not in everyone
    last = call(service, op="status", after=seen[-1])
    assert last["providers"] == {}
    assert last["next"] is None


def test_status_without_history_leaves_it_out(make_service: Callable[..., Service]) -> None:
    service = make_service()
    call(service, op="report", provider="fast", status=429)
    full = call(service, op="status")["providers"]["fast"]["buckets"]["default"]
    assert full["history"], "a 429 is in the bucket's history"
    lean = call(service, op="status", history=False)["providers"]["fast"]["buckets"]["default"]
    assert "history" not in lean
    assert lean == {key: value for key, value in full.items() if key != "history"}


def test_status_of_many_providers_comes_in_slices_of_one_line(make_service: Callable[..., Service]) -> None:
    service = make_service(_many(120))
    answer = service.handle(parse_request(b'{"op":"status","id":"s"}', max_timeout=60.0))
    assert isinstance(answer, StatusSlices)
    pieces = list(answer)
    assert len(pieces) >= 4  # head, three slices of at most SLICE_PROVIDERS, tail
    line = b"".join(pieces)
    assert line.count(b"\n") == 1
    assert line.endswith(b"\n")
    assert orjson.loads(line)["id"] == "s"
    fails(service, ErrorCode.UNKNOWN_PROVIDER, op="status", provider="nobody")


def test_a_provider_created_on_first_use_takes_the_profile_of_its_name(
    make_service: Callable[..., Service],
) -> None:
    service = make_service("")
    call(service, op="acquire", provider="anthropic")
    call(service, op="acquire", provider="elsewhere")
    anthropic = bucket_json(service, "anthropic")["limits"]
    assert set(anthropic) == {"requests", "input_tokens", "output_tokens"}
    assert anthropic["requests"]["baseline"] == pytest.approx(50 / 60)
    assert service.registry.providers["anthropic"].config.trust_headers == frozenset(
        {"retry_after", "anthropic"}
    )
    assert set(bucket_json(service, "elsewhere")["limits"]) == {"requests"}
    # Off: every unlisted provider gets the defaults; a configured one always wins.
    plain = make_service('[server]\nprofiles_on_first_use = false\n[providers.openai]\nrate = "3/second"\n')
    call(plain, op="acquire", provider="anthropic")
    call(plain, op="acquire", provider="openai")
    assert set(bucket_json(plain, "anthropic")["limits"]) == {"requests"}
    assert bucket_json(plain, "anthropic")["limits"]["requests"]["baseline"] == 10.0
    assert bucket_json(plain, "openai")["limits"]["requests"]["baseline"] == 3.0


def test_units_the_provider_does_not_limit_are_dropped_and_listed(
    service: Service, loop: asyncio.AbstractEventLoop, fake_clock: FakeClock
) -> None:
    # `fast` limits only requests (burst 1): `tokns` is a typo, and the object's request counts.
    granted = call(service, op="acquire", provider="fast", cost={"tokns": 500, "requests": 1})
    assert granted["ignored_units"] == ["tokns"]
    pending = call(service, op="acquire", provider="fast", id="w", cost={"tokns": 5, "more": 1})
    assert isinstance(pending, PendingAcquire)
    assert pending.waiter.cost == {"requests": 1.0}  # nothing unlimited waits in the queue
    assert pending.bucket.queue.pending_cost() == {"requests": 1.0}
    fake_clock.advance(0.1)
    run_due(loop)
    assert service.finish(pending)["ignored_units"] == ["tokns", "more"]
    # `requests` is never listed, and a cost of only limited units lists nothing.
    tokens_only = call(service, op="acquire", provider="multi", cost={"tokens": 10})
    assert "ignored_units" not in tokens_only


def test_an_object_cost_without_requests_takes_one_request(service: Service) -> None:
    call(service, op="acquire", provider="fast", cost={"tokens": 5})  # takes the burst of 1
    error = fails(service, ErrorCode.TIMEOUT, op="acquire", provider="fast", cost={"tokens": 5}, timeout=0)
    assert error.fields["retry_after"] == pytest.approx(0.1)
    free = call(service, op="acquire", provider="fast", cost={"requests": 0, "tokens": 5}, timeout=0)
    assert free["ok"] is True


SCOPES = """
[providers.flaky]
rate = "50/second"
retry_after_scope = "request"

[providers.plain]
rate = "50/second"
"""


def test_status_shows_whom_a_retry_after_holds_and_a_request_scope_never_pauses(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(SCOPES, {"RATELIMITD_FEATURE_LEARNING": "1"})
    providers = call(service, op="status")["providers"]
    assert providers["flaky"]["buckets"]["default"]["retry_after_scope"] == {
        "scope": "request", "setting": "request", "why": "configured: request",
    }  # fmt: skip
    plain = providers["plain"]["buckets"]["default"]["retry_after_scope"]
    assert (plain["scope"], plain["setting"]) == ("bucket", "auto")
    for name in ("flaky", "plain"):
        permit = call(service, op="acquire", provider=name, timeout=0)["permit"]
        call(service, op="report", provider=name, status=429, retry_after=2, permit=permit)
    buckets = {name: service.registry.providers[name].buckets["default"] for name in ("flaky", "plain")}
    assert (buckets["flaky"].pauses, buckets["plain"].pauses) == (0, 1)


def test_a_tick_runs_in_slices_and_skips_providers_gone_meanwhile(
    make_service: Callable[..., Service], fake_clock: FakeClock
) -> None:
    count = TICK_SLICE * 2 + 200
    text = f"[server]\nmax_providers = {count}\n" + "".join(
        f'[providers.p{i}]\nrate = "10/second"\n' for i in range(count)
    )
    service = make_service(text, {"RATELIMITD_FEATURE_LEARNING": "1"})
    for i in range(count):  # every bucket paused for 1 s by its provider
        call(service, op="report", provider=f"p{i}", status=429, retry_after=1.0)
    fake_clock.advance(2.0)
    slices = service.tick_slices()
    next(slices)
    gone = service.registry.providers.pop(f"p{count - 1}")  # dropped between two slices
    assert sum(1 for _ in slices) == 2  # three slices in all
    learners = [provider.buckets["default"].learner for provider in service.registry.providers.values()]
    assert all(learner.pause_until is None for learner in learners)  # every pause ended
    assert gone.buckets["default"].learner.pause_until is not None  # not ticked once gone
