"""Property-based fuzzing of the protocol against a real daemon (hypothesis).

Every generated line, pipelined with others on one connection, gets exactly one answer:
a JSON object whose `ok` is a boolean, whose `error` (when not ok) is one of the stable
codes, and which echoes the request's integer `id`. The daemon stays up and answers an
unrelated `ping` after each batch. `make test` runs a bounded number of examples;
`make fuzz` runs many more (RATELIMITD_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import NdjsonClient

from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.protocol import parse_request

if TYPE_CHECKING:
    from daemons import DaemonFactory, RunningDaemon

EXAMPLES = int(os.environ.get("RATELIMITD_FUZZ_EXAMPLES", "100"))
CODES = {code.value for code in ErrorCode}
MAX_LINE = 65536

# Short waits only: an acquire may wait at most 1 s, a pause at most 2 s.
CONFIG = """
[server]
log_level = "warning"
max_timeout = 1.0
default_timeout = 0.2
max_providers = 50

[learning]
max_pause = 2.0

[providers.fast]
rate = "100000/second"
burst = 1000

[providers.multi]
limits = [
  { unit = "requests", rate = "1000/second", burst = 100 },
  { unit = "tokens", rate = "100000/second", burst = 10000 },
]
buckets = ["k1", "k2"]
"""

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES <= 1000,  # CI runs the same examples every time; `make fuzz` explores
    database=None,
)

names = st.one_of(
    st.sampled_from(["fast", "multi", "k1", "k2", "default", "nope", "a.b:c-d_e"]),
    st.text(max_size=20),
    st.text(alphabet="abc._:-", min_size=1, max_size=8),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
numbers = st.one_of(
    st.integers(min_value=-5, max_value=20),
    st.floats(min_value=-1.0, max_value=1e6, allow_nan=False),
    st.sampled_from([0, 0.0, 1e-300, 1e300, 2**53, -0.0]),
)
costs = st.one_of(
    numbers,
    st.dictionaries(st.one_of(names, st.sampled_from(["requests", "tokens"])), numbers, max_size=20),
    json_values,
)
statuses = st.one_of(
    st.integers(min_value=0, max_value=700),
    st.sampled_from([200, 401, 403, 429, 500, 503, 529, "network_error", "429"]),
    json_values,
)
header_maps = st.one_of(
    st.dictionaries(
        st.sampled_from(["retry-after", "x-ratelimit-remaining-requests", "ratelimit", "Retry-After"])
        | st.text(max_size=12),
        st.text(max_size=30) | st.sampled_from(["0", "1", "2", "1e9", "-1", "Wed, 21 Oct 2015 07:28:00 GMT"]),
        max_size=5,
    ),
    json_values,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "provider": st.one_of(names, json_values),
        "bucket": st.one_of(names, json_values),
        "cost": costs,
        "timeout": st.one_of(st.floats(min_value=0, max_value=1.0), numbers, json_values),
        "exclude": st.one_of(st.lists(names, max_size=3), json_values),
        "status": statuses,
        "permit": st.one_of(st.integers(min_value=-1, max_value=2**63), json_values),
        "reason": st.one_of(st.text(max_size=140), json_values),
        "retry_after": st.one_of(numbers, json_values),
        "headers": header_maps,
        "used": st.one_of(st.dictionaries(names, numbers, max_size=3), json_values),
        "history": st.one_of(st.booleans(), json_values),
        "limit": st.one_of(numbers, json_values),
    },
)
ops = st.one_of(
    st.sampled_from(["hello", "ping", "acquire", "report", "status", "reset"]),
    st.text(max_size=10),
    json_values,
)


@st.composite
def request_lines(draw: st.DrawFn, index: int) -> tuple[bytes, int | None]:
    """One line and the integer id its answer must echo (None: no echo can be required)."""
    kind = draw(st.integers(min_value=0, max_value=9))
    if kind == 0:  # not an object, or not JSON at all
        raw = draw(st.one_of(st.binary(max_size=60), st.builds(orjson.dumps, json_values)))
        return raw.replace(b"\n", b" ").replace(b"\r", b" "), None
    body: dict[str, Any] = draw(fields)
    if draw(st.integers(min_value=0, max_value=9)):
        body["op"] = draw(ops)
    if kind == 1:  # an id of any other type (integers are the ones the test matches)
        body["id"] = draw(json_values.filter(lambda value: type(value) is not int))
        return orjson.dumps(body), None
    body["id"] = index
    return orjson.dumps(body), index


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[bytes, int | None]]:
    count = draw(st.integers(min_value=1, max_value=12))
    return [draw(request_lines(index)) for index in range(count)]


@pytest.fixture(scope="module")
def fuzzed(module_daemon_factory: DaemonFactory) -> RunningDaemon:
    return module_daemon_factory(CONFIG)


def check_answers(lines: list[tuple[bytes, int | None]], answers: list[dict[str, Any]]) -> None:
    for answer in answers:
        assert isinstance(answer, dict), answer
        assert isinstance(answer.get("ok"), bool), answer
        if not answer["ok"]:
            assert answer["error"] in CODES, answer
            assert answer["error"] != ErrorCode.INTERNAL.value, answer
            assert isinstance(answer["message"], str), answer
    echoed = sorted(answer["id"] for answer in answers if type(answer.get("id")) is int)
    expected = sorted(rid for _, rid in lines if rid is not None)
    assert [rid for rid in echoed if rid in expected] == expected, (expected, echoed)


@FUZZ
@given(lines=batches())
def test_every_line_gets_one_well_formed_answer(
    fuzzed: RunningDaemon, lines: list[tuple[bytes, int | None]]
) -> None:
    sendable = [(raw, rid) for raw, rid in lines if raw.strip() and len(raw) < MAX_LINE]
    with NdjsonClient.connect(fuzzed.socket_path, timeout=10.0) as client:
        client.send_raw(b"".join(raw + b"\n" for raw, _ in sendable))
        answers = client.read_responses(len(sendable), timeout=10.0)
        check_answers(sendable, answers)
        assert client.request("ping")["ok"] is True
        assert not client.has_response()  # exactly one answer per line
    assert fuzzed.request("ping")["ok"] is True


@FUZZ
@given(line=st.one_of(st.binary(max_size=200), st.builds(orjson.dumps, json_values)))
def test_parsing_any_line_raises_only_protocol_errors(line: bytes) -> None:
    # Anything else than a RatelimitdError (a bug) propagates and fails the example.
    with contextlib.suppress(RatelimitdError):
        parse_request(line, max_timeout=3600.0)
