"""Protocol v1 parsing and encoding: line bytes -> typed request; response -> one line. Pure."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.protocol import (
    AcquireRequest,
    HelloRequest,
    PingRequest,
    ReportRequest,
    ResetRequest,
    StatusRequest,
    encode,
    encode_error,
    parse_request,
    request_id,
)


def _parse(obj: Any, *, max_timeout: float = 3600.0) -> object:
    return parse_request(json.dumps(obj).encode(), max_timeout=max_timeout)


def _error(line: bytes | Any, *, max_timeout: float = 3600.0) -> RatelimitdError:
    raw = line if isinstance(line, bytes) else json.dumps(line).encode()
    with pytest.raises(RatelimitdError) as info:
        parse_request(raw, max_timeout=max_timeout)
    return info.value


def test_hello_ping_status_reset() -> None:
    assert _parse({"op": "hello", "id": 1}) == HelloRequest(1)
    assert _parse({"op": "ping"}) == PingRequest(None)
    assert _parse({"op": "ping", "id": "x"}) == PingRequest("x")
    assert _parse({"op": "ping", "id": None}) == PingRequest(None)
    assert _parse({"op": "status"}) == StatusRequest(None, None)
    assert _parse({"op": "status", "provider": "openai"}) == StatusRequest(None, "openai")
    paged = {"op": "status", "limit": 1000, "after": "a:b", "history": False}
    assert _parse(paged) == StatusRequest(None, None, 1000, "a:b", False)
    assert _parse({"op": "status", "limit": None, "after": None, "history": None}) == StatusRequest(
        None, None
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit": 0}, "limit: must be an integer 1-1000, got 0"),
        ({"limit": 1001}, "limit: must be an integer 1-1000, got 1001"),
        ({"limit": 2.5}, "limit: must be an integer 1-1000, got 2.5"),
        ({"limit": True}, "limit: must be an integer 1-1000, got True"),
        ({"limit": "10"}, "limit: must be an integer 1-1000, got '10'"),
        ({"after": 3}, "after: must be a string, got int"),
        ({"after": "no spaces"}, "after: must be 1-128 characters"),
        ({"history": "no"}, "history: must be true or false, got 'no'"),
        ({"history": 0}, "history: must be true or false, got 0"),
    ],
)
def test_bad_status_paging_fields_name_the_field(fields: dict[str, Any], message: str) -> None:
    error = _error({"op": "status", "id": 3, **fields})
    assert error.code is ErrorCode.BAD_REQUEST
    assert error.message.startswith(message)
    assert _parse({"op": "reset", "provider": "openai"}) == ResetRequest(None, "openai", None)
    assert _parse({"op": "reset", "provider": "openai", "bucket": "k1"}) == ResetRequest(None, "openai", "k1")


def test_acquire_defaults() -> None:
    request = _parse({"op": "acquire", "provider": "openai"})
    assert request == AcquireRequest(None, "openai", {"requests": 1.0}, None, frozenset())
    # null means "the default" too
    nulls = {"op": "acquire", "provider": "openai", "cost": None, "timeout": None, "exclude": None}
    assert _parse(nulls) == request


def test_acquire_with_every_field() -> None:
    request = _parse(
        {
            "op": "acquire",
            "id": 9,
            "provider": "api.example.com:v2_x-y",
            "cost": {"requests": 1, "tokens": 1200.5},
            "timeout": 0,
            "exclude": ["k1", "k2"],
            "unknown_fields": "are ignored",
        }
    )
    assert request == AcquireRequest(
        9, "api.example.com:v2_x-y", {"requests": 1.0, "tokens": 1200.5}, 0.0, frozenset({"k1", "k2"})
    )


def test_a_number_cost_is_in_requests() -> None:
    request = _parse({"op": "acquire", "provider": "p", "cost": 2.5})
    assert isinstance(request, AcquireRequest)
    assert request.cost == {"requests": 2.5}


def test_report_defaults_and_fields() -> None:
    assert _parse({"op": "report", "provider": "p", "status": 200}) == ReportRequest(
        None, "p", "default", 200, None, None, None, {}
    )
    full = _parse(
        {
            "op": "report",
            "provider": "p",
            "bucket": "k1",
            "status": "network_error",
            "permit": 12,
            "reason": "insufficient_quota",
            "retry_after": 1.5,
            "headers": {"Retry-After": "3"},
        }
    )
    assert full == ReportRequest(None, "p", "k1", None, 12, "insufficient_quota", 1.5, {"Retry-After": "3"})


def test_provider_names_at_the_length_limits() -> None:
    assert isinstance(_parse({"op": "acquire", "provider": "a"}), AcquireRequest)
    assert isinstance(_parse({"op": "acquire", "provider": "a" * 128}), AcquireRequest)
    assert _error({"op": "acquire", "provider": "a" * 129}).code is ErrorCode.BAD_REQUEST


def test_a_valid_name_seen_before_is_still_checked_as_a_name_elsewhere() -> None:
    assert isinstance(_parse({"op": "acquire", "provider": "seen"}), AcquireRequest)
    assert _error({"op": "acquire", "provider": "seen", "cost": {"seen ": 1}}).code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("line", "code", "message"),
    [
        (b"nope", ErrorCode.INVALID_JSON, "not valid JSON: "),
        (b"[]", ErrorCode.INVALID_JSON, "expected a JSON object, got list"),
        (b"1e400", ErrorCode.INVALID_JSON, "not valid JSON: "),
        (b'{"op":"acquire","provider":"p","cost":1e400}', ErrorCode.INVALID_JSON, "not valid JSON: "),
        (b'{"op":"acquire","provider":"p","cost":NaN}', ErrorCode.INVALID_JSON, "not valid JSON: "),
        ({}, ErrorCode.BAD_REQUEST, "op: required"),
        ({"op": 1}, ErrorCode.BAD_REQUEST, "op: must be a string, got int"),
        ({"op": "ping", "id": 1.0}, ErrorCode.BAD_REQUEST, "id: must be a string or an integer"),
        ({"op": "ping", "id": False}, ErrorCode.BAD_REQUEST, "id: must be a string or an integer"),
        ({"op": "jump"}, ErrorCode.UNKNOWN_OP, "op: unknown op 'jump'"),
        ({"op": "acquire"}, ErrorCode.BAD_REQUEST, "provider: required"),
        ({"op": "acquire", "provider": []}, ErrorCode.BAD_REQUEST, "provider: must be a string, got list"),
        ({"op": "acquire", "provider": "a b"}, ErrorCode.BAD_REQUEST, "provider: must be 1-128 characters"),
        (
            {"op": "acquire", "provider": "p", "cost": 0},
            ErrorCode.BAD_REQUEST,
            "cost: must be a finite number > 0",
        ),
        (
            {"op": "acquire", "provider": "p", "cost": -2},
            ErrorCode.BAD_REQUEST,
            "cost: must be a finite number > 0",
        ),
        (
            {"op": "acquire", "provider": "p", "cost": "2"},
            ErrorCode.BAD_REQUEST,
            "cost: must be a number, got str",
        ),
        ({"op": "acquire", "provider": "p", "cost": {}}, ErrorCode.BAD_REQUEST, "cost: an object of units"),
        ({"op": "acquire", "provider": "p", "cost": {"t": -1}}, ErrorCode.BAD_REQUEST, "cost.t: must be"),
        ({"op": "acquire", "provider": "p", "cost": {"": 1}}, ErrorCode.BAD_REQUEST, "cost: unit names"),
        (
            {"op": "acquire", "provider": "p", "timeout": -0.5},
            ErrorCode.BAD_REQUEST,
            "timeout: must be a finite",
        ),
        (
            {"op": "acquire", "provider": "p", "timeout": 3601},
            ErrorCode.BAD_REQUEST,
            "timeout: must be <= 3600",
        ),
        ({"op": "acquire", "provider": "p", "exclude": {"a": 1}}, ErrorCode.BAD_REQUEST, "exclude: must be"),
        ({"op": "report", "provider": "p"}, ErrorCode.BAD_REQUEST, "status: required"),
        ({"op": "report", "provider": "p", "status": 700}, ErrorCode.BAD_REQUEST, "status: must be an HTTP"),
        (
            {"op": "report", "provider": "p", "status": 200, "permit": 1.5},
            ErrorCode.BAD_REQUEST,
            "permit: must",
        ),
        (
            {"op": "report", "provider": "p", "status": 200, "headers": {str(i): "v" for i in range(201)}},
            ErrorCode.BAD_REQUEST,
            "headers: at most 200 headers, got 201",
        ),
        (
            {"op": "report", "provider": "p", "status": 200, "headers": {"h": None}},
            ErrorCode.BAD_REQUEST,
            "headers.h",
        ),
        (
            {"op": "report", "provider": "p", "status": 200, "reason": 5},
            ErrorCode.BAD_REQUEST,
            "reason: must",
        ),
        (
            {"op": "report", "provider": "p", "status": 200, "retry_after": "1"},
            ErrorCode.BAD_REQUEST,
            "retry_after",
        ),
        ({"op": "reset"}, ErrorCode.BAD_REQUEST, "provider: required"),
        ({"op": "reset", "provider": "p", "bucket": 3}, ErrorCode.BAD_REQUEST, "bucket: must be a string"),
    ],
)
def test_malformed_requests(line: bytes | dict[str, Any], code: ErrorCode, message: str) -> None:
    error = _error(line)
    assert error.code is code
    assert error.message.startswith(message), error.message


def test_the_timeout_limit_is_the_daemons_max_timeout() -> None:
    assert isinstance(
        _parse({"op": "acquire", "provider": "p", "timeout": 10}, max_timeout=10), AcquireRequest
    )
    assert _error({"op": "acquire", "provider": "p", "timeout": 10.5}, max_timeout=10).message == (
        "timeout: must be <= 10 seconds, got 10.5"
    )


def test_long_bad_values_are_cut_in_messages() -> None:
    error = _error({"op": "acquire", "provider": "x y" * 1000})
    assert len(error.message) < 300
    assert len(_error({"op": "z" * 10_000}).message) < 200


def test_request_id_only_echoes_strings_and_integers() -> None:
    assert request_id({"id": "a"}) == "a"
    assert request_id({"id": 3}) == 3
    assert request_id({"id": True}) is None
    assert request_id({"id": 1.5}) is None
    assert request_id({}) is None


def test_encode_is_one_line_with_a_newline() -> None:
    line = encode({"id": 1, "ok": True, "rate": 0.5, "nested": {"a": [1, 2]}})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert orjson.loads(line) == {"id": 1, "ok": True, "rate": 0.5, "nested": {"a": [1, 2]}}


def test_encode_error_carries_code_message_and_fields() -> None:
    error = RatelimitdError(ErrorCode.TIMEOUT, "no permit", retry_after=1.25)
    assert orjson.loads(encode_error("r1", error)) == {
        "id": "r1",
        "ok": False,
        "error": "timeout",
        "message": "no permit",
        "retry_after": 1.25,
    }
    reasons = RatelimitdError(ErrorCode.ALL_BUCKETS_EXHAUSTED, "none", reasons={"a": "excluded"})
    assert orjson.loads(encode_error(None, reasons))["reasons"] == {"a": "excluded"}


def test_error_codes_are_the_spec_table() -> None:
    assert [code.value for code in ErrorCode] == [
        "invalid_json",
        "bad_request",
        "unknown_op",
        "line_too_long",
        "unknown_provider",
        "too_many_providers",
        "cost_too_large",
        "timeout",
        "all_buckets_exhausted",
        "shutting_down",
        "forbidden",
        "internal",
    ]


def test_an_object_cost_counts_one_request_unless_written_out() -> None:
    request = _parse({"op": "acquire", "provider": "p", "cost": {"tokens": 1200}})
    assert isinstance(request, AcquireRequest)
    assert request.cost == {"requests": 1.0, "tokens": 1200.0}
    free = _parse({"op": "acquire", "provider": "p", "cost": {"requests": 0, "tokens": 5}})
    assert isinstance(free, AcquireRequest)
    assert free.cost == {"requests": 0.0, "tokens": 5.0}


def test_an_object_cost_names_at_most_16_units() -> None:
    sixteen = {f"u{i}": 1 for i in range(16)}
    request = _parse({"op": "acquire", "provider": "p", "cost": sixteen})
    assert isinstance(request, AcquireRequest)
    assert len(request.cost) == 17  # the 16 named and the implied request
    error = _error({"op": "acquire", "provider": "p", "cost": {**sixteen, "u16": 1}})
    assert error.code is ErrorCode.BAD_REQUEST
    assert error.message == "cost: at most 16 units, got 17"
