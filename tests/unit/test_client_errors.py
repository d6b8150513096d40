"""The client's pure parts: error mapping, request bodies, response parsing, local bucket."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from ratelimitd.client import local_limiter
from ratelimitd.client.errors import (
    AllBucketsExhausted,
    ConnectionLost,
    DaemonUnavailable,
    LineTooLong,
    PermitTimeout,
    RatelimitdClientError,
    error_for,
    error_from_response,
)
from ratelimitd.client.sync import LocalBucket
from ratelimitd.client.types import (
    LOCAL_FALLBACK_BUCKET,
    Permit,
    acquire_body,
    check_response,
    encode_line,
    permit_from_response,
    providers_from_response,
    report_body,
    report_result_from_response,
    requests_in,
    reset_body,
    status_body,
    without_envelope,
)
from ratelimitd.core.errors import ErrorCode
from ratelimitd.core.protocol import AcquireRequest, ReportRequest, ResetRequest, StatusRequest, parse_request
from ratelimitd.daemon.clock import FakeClock


class TestErrorMapping:
    def test_every_code_has_its_own_subclass(self) -> None:
        classes = {code: error_for(code) for code in ErrorCode}
        assert len(set(classes.values())) == len(ErrorCode)
        for code, cls in classes.items():
            assert issubclass(cls, RatelimitdClientError)
            assert cls is not RatelimitdClientError
            assert error_for(code.value) is cls

    @pytest.mark.parametrize("code", list(ErrorCode))
    def test_response_becomes_the_class_of_its_code(self, code: ErrorCode) -> None:
        error = error_from_response(
            {"id": 7, "ok": False, "error": code.value, "message": "field: why", "extra": 1}
        )
        assert type(error) is error_for(code)
        assert error.code is code
        assert error.message == "field: why"
        assert error.fields == {"extra": 1}
        assert code.value in str(error)

    def test_names_of_the_main_classes(self) -> None:
        assert error_for("timeout") is PermitTimeout
        assert error_for("all_buckets_exhausted") is AllBucketsExhausted
        assert error_for("line_too_long") is LineTooLong
        assert error_for("no_such_code") is RatelimitdClientError

    def test_timeout_carries_retry_after(self) -> None:
        error = error_from_response({"ok": False, "error": "timeout", "message": "m", "retry_after": 0.25})
        assert isinstance(error, PermitTimeout)
        assert error.retry_after == 0.25

    def test_timeout_without_retry_after(self) -> None:
        error = error_from_response({"ok": False, "error": "timeout", "message": "m"})
        assert isinstance(error, PermitTimeout)
        assert error.retry_after is None

    def test_all_buckets_exhausted_carries_reasons(self) -> None:
        error = error_from_response(
            {
                "ok": False,
                "error": "all_buckets_exhausted",
                "message": "m",
                "reasons": {"key1": "paused", "key2": "disabled"},
                "retry_after": 3,
            }
        )
        assert isinstance(error, AllBucketsExhausted)
        assert error.reasons == {"key1": "paused", "key2": "disabled"}
        assert error.retry_after == 3.0

    def test_unknown_code_from_a_newer_daemon_keeps_the_code(self) -> None:
        error = error_from_response({"ok": False, "error": "quota_gone", "message": "m"})
        assert type(error) is RatelimitdClientError
        assert error.fields["unknown_code"] == "quota_gone"
        assert "quota_gone" in str(error)

    def test_connection_lost_is_a_daemon_unavailable(self) -> None:
        error = ConnectionLost("/run/x.sock", "EOF")
        assert isinstance(error, DaemonUnavailable)
        assert isinstance(error, ConnectionError)
        assert "/run/x.sock" in str(error)

    def test_check_response(self) -> None:
        ok = {"id": 1, "ok": True, "x": 2}
        assert check_response(ok) is ok
        with pytest.raises(PermitTimeout):
            check_response({"id": 1, "ok": False, "error": "timeout", "message": "m"})
        with pytest.raises(TypeError):
            check_response([1, 2])


def _parse(body: dict[str, Any]) -> Any:
    """What the daemon's own parser makes of a client body (the contract check)."""
    body = {**body, "id": 5}
    line = encode_line(body)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    return parse_request(line[:-1], max_timeout=3600.0)


class TestRequestBodies:
    def test_default_acquire_leaves_defaults_to_the_daemon(self) -> None:
        body = acquire_body("openai", 1, None, ())
        assert body == {"op": "acquire", "provider": "openai"}
        request = _parse(body)
        assert isinstance(request, AcquireRequest)
        assert request.cost == {"requests": 1.0}
        assert request.timeout is None
        assert request.exclude == frozenset()

    def test_acquire_with_everything(self) -> None:
        body = acquire_body("openai", {"requests": 1, "tokens": 1200}, 2.5, ["k1", "k2"])
        request = _parse(body)
        assert isinstance(request, AcquireRequest)
        assert request.id == 5
        assert request.cost == {"requests": 1.0, "tokens": 1200.0}
        assert request.timeout == 2.5
        assert request.exclude == frozenset({"k1", "k2"})

    def test_zero_timeout_is_sent(self) -> None:
        assert acquire_body("p", 3, 0, ())["timeout"] == 0

    @pytest.mark.parametrize("cost", [0, -1, math.nan, math.inf, {}, {"tokens": -5}])
    def test_bad_costs_fail_before_sending(self, cost: Any) -> None:
        with pytest.raises(ValueError, match="cost"):
            acquire_body("p", cost, None, ())

    @pytest.mark.parametrize("cost", [True, "1", {"tokens": "many"}])
    def test_wrong_typed_costs_fail_before_sending(self, cost: Any) -> None:
        with pytest.raises(TypeError, match="cost"):
            acquire_body("p", cost, None, ())

    @pytest.mark.parametrize("timeout", [-0.1, math.nan, math.inf])
    def test_bad_timeouts_fail_before_sending(self, timeout: float) -> None:
        with pytest.raises(ValueError, match="timeout"):
            acquire_body("p", 1, timeout, ())

    def test_report_minimal_and_full(self) -> None:
        minimal = _parse(
            report_body(
                "openai",
                200,
                bucket="default",
                permit=None,
                reason=None,
                retry_after=None,
                headers=None,
            )
        )
        assert isinstance(minimal, ReportRequest)
        assert (minimal.status, minimal.bucket, minimal.permit) == (200, "default", None)
        full = _parse(
            report_body(
                "openai",
                429,
                bucket="key2",
                permit=17,
                reason="rate_limit_exceeded",
                retry_after=1.5,
                headers={"Retry-After": "2"},
            )
        )
        assert isinstance(full, ReportRequest)
        assert full.bucket == "key2"
        assert full.permit == 17
        assert full.reason == "rate_limit_exceeded"
        assert full.retry_after == 1.5
        assert full.headers == {"Retry-After": "2"}

    def test_network_error_report(self) -> None:
        body = report_body(
            "p",
            "network_error",
            bucket="default",
            permit=None,
            reason=None,
            retry_after=None,
            headers=None,
        )
        assert orjson.loads(encode_line(body))["status"] == "network_error"
        request = _parse(body)
        assert isinstance(request, ReportRequest)
        assert request.status is None

    def test_status_and_reset_of_all_or_one(self) -> None:
        assert _parse(status_body(None)) == StatusRequest(5, None)
        assert _parse(status_body("openai")) == StatusRequest(5, "openai")
        assert _parse(reset_body("openai", None)) == ResetRequest(5, "openai", None)
        assert _parse(reset_body("openai", "key2")) == ResetRequest(5, "openai", "key2")


class TestResponses:
    def test_permit_from_a_grant(self) -> None:
        permit = permit_from_response(
            "openai",
            {
                "ok": True,
                "provider": "openai",
                "bucket": "k2",
                "waited": 0.125,
                "rate": 58.3,
                "permit": 9,
            },
        )
        assert permit == Permit("openai", "k2", 9, 0.125, 58.3)
        assert not permit.local

    def test_permit_without_optional_fields(self) -> None:
        permit = permit_from_response("p", {"ok": True})
        assert permit == Permit("p", "default", None, 0.0, None)

    def test_local_permit(self) -> None:
        assert Permit("p", LOCAL_FALLBACK_BUCKET, None, 0.0, 1.0).local

    def test_report_result(self) -> None:
        result = report_result_from_response(
            "p", "default", {"ok": True, "rate": 5, "streak": 3, "action": "reduced"}
        )
        assert (result.rate, result.streak, result.action) == (5.0, 3, "reduced")

    def test_status_providers_and_bare_responses(self) -> None:
        providers: dict[str, Any] = {"openai": {"buckets": {}}}
        assert providers_from_response({"id": 1, "ok": True, "providers": providers}) is providers
        assert providers_from_response({"id": 1, "ok": True, "providers": []}) == {}
        assert without_envelope({"id": 1, "ok": True, "server": "ratelimitd"}) == {"server": "ratelimitd"}

    @pytest.mark.parametrize(
        ("cost", "requests"),
        [(1, 1.0), (3, 3.0), (0.5, 1.0), ({"tokens": 900}, 1.0), ({"requests": 2}, 2.0)],
    )
    def test_requests_in(self, cost: Any, requests: float) -> None:
        assert requests_in(cost) == requests


class TestLocalBucket:
    def test_burst_then_delay_then_refill(self) -> None:
        clock = FakeClock()
        bucket = LocalBucket(4.0, clock.monotonic)
        assert [bucket.reserve(1, 0) for _ in range(4)] == [0.0] * 4
        with pytest.raises(PermitTimeout) as caught:
            bucket.reserve(1, 0)
        assert caught.value.retry_after == pytest.approx(0.25)
        assert bucket.level() == pytest.approx(4.0)  # the refused permit booked nothing
        assert bucket.reserve(1, 1.0) == pytest.approx(0.25)  # booked, to be used later
        clock.advance(0.5)
        assert bucket.level() == pytest.approx(3.0)
        assert bucket.reserve(1, 0) == 0.0

    def test_waiters_are_served_in_order(self) -> None:
        clock = FakeClock()
        bucket = LocalBucket(2.0, clock.monotonic)
        delays = [bucket.reserve(1, None) for _ in range(6)]
        assert delays == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])

    def test_slow_rate_allows_one_at_a_time(self) -> None:
        clock = FakeClock()
        bucket = LocalBucket(0.5, clock.monotonic)
        assert bucket.capacity == 1.0
        assert bucket.reserve(1, 0) == 0.0
        assert bucket.reserve(1, None) == pytest.approx(2.0)

    def test_aiolimiter_fallback_limiter_shapes(self) -> None:
        fast = local_limiter(5.0)
        assert (fast.max_rate, fast.time_period) == (5.0, 1.0)
        slow = local_limiter(0.25)
        assert (slow.max_rate, slow.time_period) == (1.0, 4.0)


def test_report_body_accepts_aiohttp_header_mappings() -> None:
    """`report(..., headers=response.headers)` must encode: aiohttp names are istr, not str."""
    from multidict import CIMultiDict, istr

    from ratelimitd.client.types import encode_line, report_body

    headers = CIMultiDict({istr("Retry-After"): "7", istr("X-RateLimit-Remaining"): "0"})
    body = report_body(
        "openai", 429, bucket="default", permit=None, reason=None, retry_after=None, headers=headers
    )
    line = encode_line(body)
    assert b'"Retry-After":"7"' in line
