"""The persisted state file's format: versioned JSON bytes <-> `LoadedState`.

Pure: no I/O, no clocks, no asyncio; `now_wall` is a parameter. The file I/O,
locking and policy live in `ratelimitd.ops.persist`. Format (docs/persistence.md)::

    {"version": 1, "saved_at": <unix seconds>,
     "buckets": {"<provider>": {"<bucket>": {"last_seen": <unix>, "learner": {...}}}}}

`learner` is whatever `BucketLearner.snapshot()` returned; this module only
checks that it is a JSON object. Buckets are nested by provider (not joined as
"provider/bucket") so that no name needs escaping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = (
    "SCHEMA_VERSION",
    "BucketKey",
    "LoadedState",
    "StateFormatError",
    "decode_state",
    "encode_state",
)

SCHEMA_VERSION = 1

BucketKey = tuple[str, str]
"""(provider, bucket)."""


class StateFormatError(ValueError):
    """The bytes are not a state file this version can read; `future` if the schema is newer."""

    def __init__(self, message: str, *, future: bool = False) -> None:
        super().__init__(message)
        self.future = future


@dataclass(frozen=True, slots=True)
class LoadedState:
    """What a state file held, minus entries older than `max_age`.

    `buckets` maps (provider, bucket) to the learner snapshot to restore;
    `saved_at` is the file's unix save time and `stale_for` = now - saved_at
    (never negative). `last_seen` is each entry's own unix time (older than
    `saved_at` for entries carried over for providers no longer configured);
    `expired` counts entries dropped for being older than `max_age`; `rejected`
    says, per malformed entry, why it was dropped ("buckets.p.b.last_seen: ...").
    """

    buckets: dict[BucketKey, dict[str, object]]
    saved_at: float
    stale_for: float
    last_seen: dict[BucketKey, float] = field(default_factory=dict)
    expired: int = 0
    rejected: list[str] = field(default_factory=list)

    def age(self, key: BucketKey, now_wall: float) -> float:
        """Seconds since the entry `key` was last live (its decay time), never negative."""
        return max(0.0, now_wall - self.last_seen.get(key, self.saved_at))


def encode_state(
    buckets: Mapping[BucketKey, Mapping[str, object]],
    saved_at: float,
    last_seen: Mapping[BucketKey, float] | None = None,
) -> bytes:
    """Serialise learner snapshots as a version-1 state file (orjson, sorted keys, 2-space indent).

    `last_seen` gives an entry's own unix time; entries not in it get `saved_at`.
    Raises `StateFormatError` naming the bucket when a snapshot is not JSON-serialisable
    or a time is not finite.
    """
    _check_time("saved_at", saved_at)
    nested: dict[str, dict[str, dict[str, object]]] = {}
    for (provider, bucket), snapshot in buckets.items():
        seen = saved_at if last_seen is None else last_seen.get((provider, bucket), saved_at)
        _check_time(f"buckets.{provider}.{bucket}.last_seen", seen)
        nested.setdefault(provider, {})[bucket] = {"last_seen": seen, "learner": dict(snapshot)}
    document = {"version": SCHEMA_VERSION, "saved_at": saved_at, "buckets": nested}
    try:
        return orjson.dumps(
            document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        )
    except orjson.JSONEncodeError as exc:
        raise StateFormatError(f"buckets: not JSON-serialisable: {exc}") from exc


def decode_state(
    data: bytes,
    now_wall: float,
    max_age: float,
    check: Callable[[dict[str, object]], str | None] | None = None,
) -> LoadedState:
    """Parse and check a state file; drop entries whose `last_seen` is over `max_age` s old.

    Raises `StateFormatError` (with `future=True` for a newer schema) when the document
    itself is not a version-1 state file: bad JSON, a missing or wrong top-level key.
    A malformed entry is dropped alone and said in `rejected`, as is one that
    `check(learner)` finds a problem with. A `last_seen` in the future counts as now.
    Unknown extra keys are ignored (additive changes keep version 1).
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateFormatError(f"not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise StateFormatError(f"top level: must be an object, got {_kind(document)}")
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise StateFormatError(f"version: must be an integer, got {_kind(version)}")
    if version > SCHEMA_VERSION:
        raise StateFormatError(
            f"version: {version} is newer than this ratelimitd understands ({SCHEMA_VERSION})",
            future=True,
        )
    if version < 1:
        raise StateFormatError(f"version: must be >= 1, got {version}")
    saved_at = _time_field(document, "saved_at", "saved_at")
    providers = document.get("buckets")
    if not isinstance(providers, dict):
        raise StateFormatError(f"buckets: must be an object, got {_kind(providers)}")

    buckets: dict[BucketKey, dict[str, object]] = {}
    seen_at: dict[BucketKey, float] = {}
    expired = 0
    rejected: list[str] = []
    for provider, per_bucket in providers.items():
        if not isinstance(per_bucket, dict):
            rejected.append(f"buckets.{provider}: must be an object, got {_kind(per_bucket)}")
            continue
        for bucket, entry in per_bucket.items():
            where = f"buckets.{provider}.{bucket}"
            try:
                if not isinstance(entry, dict):
                    raise StateFormatError(f"{where}: must be an object, got {_kind(entry)}")
                last_seen = min(now_wall, _time_field(entry, "last_seen", f"{where}.last_seen"))
                learner = entry.get("learner")
                if not isinstance(learner, dict):
                    raise StateFormatError(f"{where}.learner: must be an object, got {_kind(learner)}")
                problem = None if check is None else check(learner)
                if problem is not None:
                    raise StateFormatError(f"{where}.learner: {problem}")
            except StateFormatError as exc:
                rejected.append(str(exc))
                continue
            if now_wall - last_seen > max_age:
                expired += 1
                continue
            buckets[(provider, bucket)] = learner
            seen_at[(provider, bucket)] = last_seen
    return LoadedState(
        buckets=buckets,
        saved_at=saved_at,
        stale_for=max(0.0, now_wall - saved_at),
        last_seen=seen_at,
        expired=expired,
        rejected=rejected,
    )


def _time_field(obj: dict[str, object], key: str, where: str) -> float:
    """A required finite number (int or float, not bool) as float."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateFormatError(f"{where}: must be a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise StateFormatError(f"{where}: must be finite, got {value}")
    return float(value)


def _check_time(where: str, value: float) -> None:
    if not math.isfinite(value):
        raise StateFormatError(f"{where}: must be a finite number, got {value!r}")


def _kind(value: object) -> str:
    """A JSON type name for messages."""
    if value is None:
        return "null (or missing)"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__
