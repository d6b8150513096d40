"""Log set-up: text or JSON lines on stderr, at most a few lines per event kind.

Code anywhere logs through plain `logging`. A record that names its event kind is
limited per kind, so a storm (a 429 storm, a flood of refused connections) becomes a
few lines and then one line with a count::

    logger.info("cut %s/%s to %s (%s)", provider, bucket, rate, reason,
                extra={"event": "cut", "provider": provider, "bucket": bucket,
                       "reason": cause, "rate": rate_per_second})

The fields named in `EVENT_FIELDS` go into the JSON line as keys (`--log-format json`).
Under systemd the journal adds its own timestamp; the text format keeps one anyway so a
line read from a file still says when.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = (
    "EVENT_FIELDS",
    "LINES_PER_WINDOW",
    "LOG_FORMATS",
    "WINDOW",
    "EventLimit",
    "JsonFormatter",
    "LogFormat",
    "flush_event_limits",
    "setup_logging",
)

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
# Extra record fields that JSON lines carry as keys.
EVENT_FIELDS = ("event", "provider", "bucket", "reason", "rate", "state", "suppressed")
LINES_PER_WINDOW = 10  # lines of one event kind let through per window ...
WINDOW = 60.0  # ... seconds; the rest are counted and summed up in one line

_summary_logger = logging.getLogger("ratelimitd.logs")


class EventLimit(logging.Filter):
    """Lets at most `lines` records of each event kind through per `window` seconds.

    Records without an `event` attribute pass untouched. The records held back in a
    window are counted; the count is logged as one line when the kind's next window
    starts (its next record) or at `flush()`, which the daemon calls periodically.
    """

    def __init__(
        self,
        *,
        lines: int = LINES_PER_WINDOW,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._lines = lines
        self._window = window
        self._clock = clock
        # kind -> [window start, lines passed, lines held back]; kinds are names in the code.
        self._kinds: dict[str, list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = getattr(record, "event", None)
        if not isinstance(kind, str):
            return True
        now = self._clock()
        state = self._kinds.get(kind)
        if state is None:
            self._kinds[kind] = [now, 1, 0]
            return True
        if now - state[0] >= self._window:
            self._summarize(kind, state)
            state[0], state[1], state[2] = now, 1, 0
            return True
        if state[1] < self._lines:
            state[1] += 1
            return True
        state[2] += 1
        return False

    def flush(self) -> None:
        """Log the count of every kind whose window has ended with lines held back."""
        now = self._clock()
        for kind, state in self._kinds.items():
            if state[2] and now - state[0] >= self._window:
                self._summarize(kind, state)
                state[0], state[1], state[2] = now, 0, 0

    def _summarize(self, kind: str, state: list[float]) -> None:
        held = int(state[2])
        if held:
            _summary_logger.warning(
                "%d more %r lines were not logged in %g s (at most %d per %g s)",
                held,
                kind,
                self._window,
                self._lines,
                self._window,
                extra={"suppressed": held, "reason": kind},
            )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the event fields present."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in EVENT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def setup_logging(level: str, log_format: LogFormat = "text") -> EventLimit:
    """Log to stderr at `level` in `log_format`; returns the event limit to `flush()` periodically."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    limit = EventLimit()
    handler.addFilter(limit)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return limit


def flush_event_limits() -> None:
    """`flush()` the event limits of the root logger's handlers (the daemon calls it periodically)."""
    for handler in logging.getLogger().handlers:
        for limit in handler.filters:
            if isinstance(limit, EventLimit):
                limit.flush()
