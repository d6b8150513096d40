"""The events the transport and service report to metrics; a no-op by default.

The metrics module provides a Prometheus implementation with the same methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ratelimitd.core.errors import ErrorCode
    from ratelimitd.core.providers import Bucket

__all__ = ("MetricsHooks", "NoMetrics")


class MetricsHooks(Protocol):
    def on_granted(self, bucket: Bucket, waited: float) -> None: ...

    def on_timeout(self, bucket: Bucket) -> None: ...

    def on_busy(self, bucket: Bucket) -> None: ...

    def on_acquire_error(self, provider: str) -> None: ...

    def on_protocol_error(self, code: ErrorCode) -> None: ...

    def on_provider_dropped(self, provider: str) -> None: ...

    def on_op(self, op: str, seconds: float) -> None: ...


class NoMetrics:
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
