"""The events the transport and service report to metrics; a no-op by default.

The metrics module's Prometheus implementation subclasses `MetricsHooks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratelimitd.core.errors import ErrorCode
    from ratelimitd.core.providers import Bucket

__all__ = ("MetricsHooks", "NoMetrics")


class MetricsHooks:
    """The events, each a no-op here. A class, not a Protocol: compiled (tools/compiled.py),
    the service calls a subclass's methods directly instead of looking each one up."""

    __slots__ = ()

    def on_granted(self, bucket: Bucket, waited: float) -> None:
        pass

    def on_timeout(self, bucket: Bucket) -> None:
        pass

    def on_busy(self, bucket: Bucket) -> None:
        pass

    def on_acquire_error(self, provider: str) -> None:
        pass

    def on_protocol_error(self, code: ErrorCode) -> None:
        pass

    def on_provider_dropped(self, provider: str) -> None:
        pass

    def on_op(self, op: str, seconds: float) -> None:
        pass


class NoMetrics(MetricsHooks):
    """Metrics off: every event is dropped."""

    __slots__ = ()
