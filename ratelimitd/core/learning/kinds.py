"""What kind of answer a report is: success, rate limit, spent quota, overload, auth failure.

Pure: no I/O, no clock reads. Rate-limit evidence comes from the status, the client's `reason`
and every unit of the parsed headers (`RateLimitHint.classify`), not just the primary unit:

* `quota`: a quota/billing `reason` (OpenAI `insufficient_quota` ...), or a 403/429 whose
  headers say some unit is at 0 until a reset at least `quota_reset_min` away -> park the
  bucket until that reset (`quota_wait`);
* `rate_limit`: 429; or 403 with rate-limit evidence (a unit at 0, or a Retry-After: GitHub's
  primary and secondary limits) -> slow down / pause, never disable;
* `overload`: 503/529 -> brief pause, no cut;
* `auth`: 401, or 403 without any rate-limit evidence -> disable the bucket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ratelimitd.core.learning.types import QUOTA_REASONS

if TYPE_CHECKING:
    from ratelimitd.core.learning.types import LearningSettings, ReportEvent

__all__ = ("Kind", "classify_report", "quota_wait")

Kind = Literal["network", "success", "rate_limit", "quota", "overload", "auth", "other"]


def classify_report(event: ReportEvent, settings: LearningSettings) -> Kind:
    """The kind of one report (see the module docstring)."""
    status = event.status
    hint = event.hint
    if event.network_error or status is None:
        return "network"
    if event.reason is not None and event.reason in QUOTA_REASONS:
        return "quota"
    if status in (403, 429):
        if hint is not None and hint.is_quota_exhausted(settings.quota_reset_min):
            return "quota"
        if status == 429 or _rate_limit_evidence(event):
            return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status in (503, 529):
        return "overload"
    if 200 <= status < 400:
        return "success"
    return "other"


def quota_wait(event: ReportEvent, settings: LearningSettings) -> float:
    """Seconds a spent quota parks the bucket: until every exhausted unit has refilled."""
    hint = event.hint
    if hint is not None:
        reset = hint.max_reset_for_exhausted()
        if reset is not None and reset > 0:
            return reset
        if hint.retry_after is not None and hint.retry_after > 0:
            return hint.retry_after
    if event.retry_after is not None and event.retry_after > 0:
        return event.retry_after
    return settings.quota_default_pause


def _rate_limit_evidence(event: ReportEvent) -> bool:
    """A unit at 0 or a Retry-After (headers or the report's field)."""
    hint = event.hint
    if event.retry_after is not None:
        return True
    if hint is None:
        return False
    return bool(hint.exhausted_units()) or hint.retry_after is not None
