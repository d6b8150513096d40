"""The seam between the service and where buckets live.

With the default memory backend the service holds no backend at all and nothing here
runs. A shared backend (`ratelimitd.backends`) is called only at the rare moments a
bucket changes: never on an acquire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ratelimitd.core.learning.learner import Decision
    from ratelimitd.core.providers import Bucket

__all__ = ("Backend",)


class Backend(Protocol):
    def attach(self, bucket: Bucket) -> None:
        """`bucket` is new, or a reload rebuilt its limiter: make it share the bucket."""

    def learned(self, bucket: Bucket, decision: Decision) -> None:
        """The bucket's learner decided something here: tell the other hosts."""

    def reset(self, bucket: Bucket) -> None:
        """A `reset` on this host: clear what was learned for every host."""

    def status(self) -> dict[str, Any]:
        """The global view and this host's part, for `status`."""
