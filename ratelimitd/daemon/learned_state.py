"""Between the service's learners and the state file: collect snapshots, restore them.

Shell glue: reads and replaces `Bucket.learner`; the file work is `ratelimitd.ops.persist`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from ratelimitd.core.learning import persist

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.core.learning.types import LearningSettings
    from ratelimitd.core.providers import Bucket, Registry
    from ratelimitd.core.statefile import BucketKey, LoadedState
    from ratelimitd.daemon.clock import Clock

__all__ = ("collect_snapshots", "restore_bucket", "restore_learners")

logger = logging.getLogger(__name__)


class LearnerHost(Protocol):
    """What this glue needs of the service (kept narrow so the service can import it)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def registry(self) -> Registry: ...
    def settings_for(self, bucket: Bucket) -> LearningSettings: ...
    def apply_learner(self, bucket: Bucket) -> None: ...


def collect_snapshots(service: LearnerHost) -> dict[BucketKey, Mapping[str, object]]:
    """Every bucket's learner snapshot, keyed by (provider, bucket)."""
    now, wall = service.clock.monotonic(), service.clock.wall()
    return {
        (bucket.provider, bucket.name): persist.snapshot(bucket.learner, now, wall)
        for bucket in service.registry.buckets()
    }


def restore_bucket(service: LearnerHost, bucket: Bucket, data: dict[str, object], stale_for: float) -> bool:
    """Replace `bucket`'s learner with one rebuilt from `data`; False (logged) if it was dropped.

    Never raises: a snapshot that cannot be restored, or whose learner the limiter cannot
    apply, leaves the bucket at its configured rates (state must never stop a start).
    """
    now, wall = service.clock.monotonic(), service.clock.wall()
    fresh = bucket.learner
    clamped: list[str] = []
    try:
        bucket.learner = persist.restore(
            service.settings_for(bucket), fresh.baseline_rate, data, now, wall, stale_for, clamped
        )
        service.apply_learner(bucket)
    except Exception as exc:  # any bad value: this bucket starts over, the daemon goes on
        bucket.learner = fresh
        service.apply_learner(bucket)
        logger.warning(
            "saved state for %s/%s is malformed and was dropped (starting from the configured rates): %s",
            bucket.provider,
            bucket.name,
            exc,
            extra=_event(bucket, "dropped"),
        )
        return False
    if clamped:
        logger.warning(
            "saved state for %s/%s was out of range and was clamped: %s",
            bucket.provider,
            bucket.name,
            "; ".join(clamped),
            extra=_event(bucket, "clamped"),
        )
    return True


def _event(bucket: Bucket, reason: str) -> dict[str, object]:
    """Log fields of a bad-state line: a storm of them is rate-limited as one event kind."""
    return {"event": "bad_state", "provider": bucket.provider, "bucket": bucket.name, "reason": reason}


def restore_learners(service: LearnerHost, loaded: LoadedState) -> int:
    """Restore what was saved for the buckets configured now (others wait for first use)."""
    wall = service.clock.wall()
    restored = 0
    for key, data in loaded.buckets.items():
        provider_name, bucket_name = key
        provider = service.registry.providers.get(provider_name)
        bucket = None if provider is None else provider.buckets.get(bucket_name)
        if bucket is not None:
            restored += restore_bucket(service, bucket, data, loaded.age(key, wall))
    return restored
