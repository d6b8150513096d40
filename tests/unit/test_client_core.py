"""The clients' shared decisions: arguments, request ids, when to connect, fall back, drop reports."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
import pytest
from tenacity import Retrying

from ratelimitd.client.core import FALLBACK_PROBE_INTERVAL, ClientCore, local_timeout
from ratelimitd.client.errors import ConnectionLost, DaemonUnavailable, PermitTimeout
from ratelimitd.client.types import LOCAL_FALLBACK_BUCKET, Permit, ReportResult
from ratelimitd.core.errors import ErrorCode

if TYPE_CHECKING:
    import pathlib

SOCKET = "/run/test/ratelimitd.sock"


class _Core(ClientCore[list[float]]):
    """The core with the one part a client must add: a local limiter (here, a list of its rate)."""

    _logger = logging.getLogger(__name__)

    def _new_local_limiter(self) -> list[float]:
        return [self.fallback_rate]


def _refused() -> None:
    raise ConnectionRefusedError(111, "Connection refused")


def _attempts(retrying: Retrying) -> tuple[int, list[float]]:
    """How many times `retrying` tries a refused connection, and the pauses it takes between tries."""
    pauses: list[float] = []
    calls = 0

    def connect() -> None:
        nonlocal calls
        calls += 1
        _refused()

    with pytest.raises(ConnectionRefusedError):
        retrying.copy(sleep=pauses.append)(connect)
    return calls, pauses


class TestArguments:
    def test_defaults(self) -> None:
        core = _Core(SOCKET)
        assert core.socket_path == SOCKET
        assert (core.fallback, core.fallback_rate, core.default_timeout) == ("raise", 1.0, None)
        assert (core.connect_timeout, core.connect_attempts) == (1.0, 3)
        assert core.fallback_probe_interval == FALLBACK_PROBE_INTERVAL
        assert core.connections_made == 0

    def test_values_are_normalized(self) -> None:
        core = _Core(SOCKET, fallback="local", fallback_rate=2, connect_attempts=0)
        assert core.fallback_rate == 2.0
        assert isinstance(core.fallback_rate, float)
        assert core.connect_attempts == 1

    @pytest.mark.parametrize(
        ("options", "field"),
        [({"fallback": "ignore"}, "fallback"), ({"fallback_rate": 0}, "fallback_rate")],
    )
    def test_bad_arguments_fail_at_construction(self, options: dict[str, object], field: str) -> None:
        with pytest.raises(ValueError, match=field):
            _Core(SOCKET, **options)  # type: ignore[arg-type]

    def test_acquire_timeout_defaults_to_the_clients(self) -> None:
        core = _Core(SOCKET, default_timeout=5.0)
        assert core._acquire_timeout(None) == 5.0
        assert core._acquire_timeout(0) == 0
        assert _Core(SOCKET)._acquire_timeout(None) is None


def test_request_lines_carry_increasing_ids() -> None:
    core = _Core(SOCKET)
    first, second = {"op": "ping"}, {"op": "ping"}
    assert core._request_line(first) == (1, b'{"op":"ping","id":1}\n')
    rid, line = core._request_line(second)
    assert rid == 2
    assert orjson.loads(line) == second == {"op": "ping", "id": 2}


class TestConnecting:
    def test_backs_off_between_attempts_until_a_fallback_starts(self) -> None:
        core = _Core(SOCKET, connect_attempts=3)
        calls, pauses = _attempts(core._connect_retrying(Retrying, now=100.0))
        assert calls == 3
        assert pauses == pytest.approx([0.02, 0.04])

    def test_falling_back_probes_once_per_interval(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger=__name__)
        core = _Core(SOCKET, fallback="local", fallback_probe_interval=2.0)
        error = core._connect_failed(ConnectionRefusedError(111, "refused"), now=100.0)
        assert (error.socket_path, error.reason) == (SOCKET, "[Errno 111] refused")
        core._local_limiter_for("api", error)  # the first local acquire starts the fallback
        with pytest.raises(DaemonUnavailable, match="still unreachable"):
            core._connect_retrying(Retrying, now=101.9)
        assert _attempts(core._connect_retrying(Retrying, now=102.0)) == (1, [])
        core._connected()
        assert core.connections_made == 1
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
            f"ratelimitd is reachable again at {SOCKET}"
        ]
        # Back on the daemon: full backoff again, and no probe interval.
        assert _attempts(core._connect_retrying(Retrying, now=0.0))[0] == 3

    def test_a_failure_without_a_message_is_named_by_its_type(self) -> None:
        assert _Core(SOCKET)._connect_failed(TimeoutError(), now=0.0).reason == "TimeoutError"


class TestFallback:
    def test_raise_mode_raises_every_unavailability(self) -> None:
        core = _Core(SOCKET)
        for error in (DaemonUnavailable(SOCKET, "gone"), ConnectionLost(SOCKET, "EOF")):
            with pytest.raises(type(error)) as caught:
                core._raise_unless_falling_back(error)
            assert caught.value is error

    def test_local_mode_goes_on_unless_the_connection_was_lost(self) -> None:
        core = _Core(SOCKET, fallback="local")
        core._raise_unless_falling_back(DaemonUnavailable(SOCKET, "gone"))
        lost = ConnectionLost(SOCKET, "EOF")
        with pytest.raises(ConnectionLost) as caught:
            core._raise_unless_falling_back(lost)
        assert caught.value is lost

    def test_one_limiter_per_provider_and_one_warning_per_outage(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        core = _Core(SOCKET, fallback="local", fallback_rate=4)
        cause = DaemonUnavailable(SOCKET, "gone")
        assert core.local_limiter("api") is None
        limiter = core._local_limiter_for("api", cause)
        assert limiter == [4.0]
        assert core._local_limiter_for("api", cause) is limiter
        assert core.local_limiter("api") is limiter
        assert core._local_limiter_for("other", cause) is not limiter
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "ratelimitd is unreachable (gone); limiting locally at 4 permits/s per provider until it is back"
        ]

    def test_local_permit(self) -> None:
        permit = _Core(SOCKET, fallback="local", fallback_rate=3)._local_permit("api", 0.5)
        assert permit == Permit("api", LOCAL_FALLBACK_BUCKET, None, 0.5, 3.0)
        assert permit.local

    def test_local_timeout_reads_like_the_daemons(self) -> None:
        error = local_timeout(0.25)
        assert isinstance(error, PermitTimeout)
        assert error.code is ErrorCode.TIMEOUT
        assert error.retry_after == 0.25
        assert error.fields == {"retry_after": 0.25, "local": True}
        assert "0.250 s" in error.message


class TestDroppedReports:
    def test_a_local_permits_report_is_dropped_in_either_mode(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger=__name__)
        result = _Core(SOCKET)._drop_report("api", LOCAL_FALLBACK_BUCKET, "granted locally")
        assert result == ReportResult("api", LOCAL_FALLBACK_BUCKET, None, 0, "dropped")
        assert caplog.records[-1].getMessage() == "report for api/local-fallback dropped: granted locally"

    def test_an_undelivered_report_raises_or_is_dropped(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger=__name__)
        error = ConnectionLost(SOCKET, "EOF")
        with pytest.raises(ConnectionLost):
            _Core(SOCKET)._drop_report("api", "key1", error)
        result = _Core(SOCKET, fallback="local")._drop_report("api", "key1", error)
        assert result.action == "dropped"
        assert caplog.records[-1].getMessage() == "report for api/key1 dropped: EOF"


def test_a_unit_the_daemon_ignored_is_warned_about_once_per_provider_and_process(
    caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    from ratelimitd.client import Client

    client = Client(tmp_path / "none.sock")  # never connects: only the grant's reading is tested
    other_client = Client(tmp_path / "none.sock")
    grant = {"ok": True, "provider": "openai", "bucket": "default", "permit": 1, "ignored_units": ["tokns"]}
    with caplog.at_level("WARNING"):
        permits = [client._permit("openai", grant) for _ in range(3)]
        other_client._permit("openai", grant)
        client._permit("other", {**grant, "provider": "other"})
    permit = permits[-1]
    assert permit.ignored_units == ("tokns",)
    warnings = [r.getMessage() for r in caplog.records if "does not limit" in r.getMessage()]
    assert len(warnings) == 2
    assert "'openai' does not limit the unit 'tokns'" in warnings[0]
