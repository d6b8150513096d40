"""Log lines: a storm of one event kind becomes a few lines and one count; JSON lines for shippers."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

import pytest

from ratelimitd.ops.logs import EventLimit, JsonFormatter, flush_event_limits, setup_logging

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ratelimitd.daemon.clock import FakeClock


@pytest.fixture
def captured(fake_clock: FakeClock) -> Iterator[tuple[logging.Logger, io.StringIO, EventLimit]]:
    """A logger whose handler writes JSON lines into a buffer through an EventLimit on fake time."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    limit = EventLimit(lines=3, window=10.0, clock=fake_clock.monotonic)
    handler.addFilter(limit)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield logging.getLogger("ratelimitd.test"), stream, limit
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_storm_of_one_kind_is_a_few_lines_and_a_count(
    captured: tuple[logging.Logger, io.StringIO, EventLimit], fake_clock: FakeClock
) -> None:
    logger, stream, _limit = captured
    for i in range(100):
        logger.info("cut %d", i, extra={"event": "cut", "provider": "api"})
    logger.info("pause", extra={"event": "pause"})  # another kind is not held back
    logger.info("plain line")  # nor a line without a kind
    assert [line["message"] for line in lines(stream)] == ["cut 0", "cut 1", "cut 2", "pause", "plain line"]
    fake_clock.advance(10.0)
    logger.info("cut again", extra={"event": "cut"})
    summary, again = lines(stream)[-2:]
    assert summary["suppressed"] == 97
    assert summary["message"] == "97 more 'cut' lines were not logged in 10 s (at most 3 per 10 s)"
    assert again["message"] == "cut again"


def test_flush_logs_the_count_when_the_storm_is_over(
    captured: tuple[logging.Logger, io.StringIO, EventLimit], fake_clock: FakeClock
) -> None:
    logger, stream, _limit = captured
    for _ in range(5):
        logger.info("refused", extra={"event": "refused"})
    flush_event_limits()
    assert len(lines(stream)) == 3  # the window is not over yet
    fake_clock.advance(11.0)
    flush_event_limits()
    flush_event_limits()  # once only
    assert [line.get("suppressed") for line in lines(stream)] == [None, None, None, 2]


def test_json_lines_carry_the_event_fields(captured: tuple[logging.Logger, io.StringIO, EventLimit]) -> None:
    logger, stream, _limit = captured
    logger.info(
        "api/k1: rate cut",
        extra={"event": "cut", "provider": "api", "bucket": "k1", "reason": "429s", "rate": 7.5},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    cut, failed = lines(stream)
    assert {k: cut[k] for k in ("level", "logger", "event", "provider", "bucket", "reason", "rate")} == {
        "level": "info",
        "logger": "ratelimitd.test",
        "event": "cut",
        "provider": "api",
        "bucket": "k1",
        "reason": "429s",
        "rate": 7.5,
    }
    assert str(cut["time"]).endswith("+00:00")
    assert "ValueError: boom" in str(failed["exception"])


def test_setup_logging_installs_one_limited_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        limit = setup_logging("warning", "json")
        (handler,) = root.handlers
        assert limit in handler.filters
        assert isinstance(handler.formatter, JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
