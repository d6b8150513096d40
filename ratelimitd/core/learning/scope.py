"""Whom a Retry-After holds: the whole bucket, or only the request that got it.

Pure: no I/O, no clock reads. One `RetryAfterScope` per bucket; `BucketLearner` asks it
before pausing the bucket for a 429's Retry-After.

A provider whose Retry-After tracks load (it says when its own bucket has refilled) lets the
first requests after a whole-bucket pause through: the pause worked. A provider that answers
a share of calls 429 + Retry-After whatever the caller's rate (a flaky or overloaded shared
upstream) keeps answering 429 at the same share right after a pause ends: pausing the whole
bucket then only stops the traffic. `auto` compares the two shares:

* the "head" of each pause: the first `HEAD` requests granted after it (reports that echo
  their permit; no other report can be placed);
* every report that echoes a permit.

When the heads keep at least half the overall 429 share (and at least `MIN_HEAD_429` of their
answers were 429s, out of `MIN_HEAD` or more), the 429s are noise with a Retry-After: it holds
only the request that got it, and starts no round of cuts. If the 429 share then climbs well
above the share judged noise (`_RISE`: a drop of the provider's capacity), the 429s track load
again: back to pausing the bucket at once. A 429 whose headers say a unit is at 0 (a hard
limit) always pauses the bucket.
"""

from __future__ import annotations

from typing import Literal

__all__ = ("HEAD", "MIN_HEAD", "MIN_HEAD_429", "RetryAfterScope", "Scope", "ScopeSetting")

Scope = Literal["bucket", "request"]
ScopeSetting = Literal["auto", "bucket", "request"]

HEAD = 8  # requests granted right after a pause that show whether the pause worked
MIN_HEAD = 10  # head answers before a verdict ...
MIN_HEAD_429 = 2  # ... of which at least this many 429s
_SAME_SHARE = 0.5  # heads keeping this share of the overall 429 share: the pause did nothing
_FORGET_AT = 100  # head answers: past this, halve the counts (a verdict on recent behaviour)
_EWMA_ALPHA = 0.005  # the 429 share once judged noise: ~ the last 200 answers
_RISE = (1.5, 0.1)  # share above 1.5 x the noise share + 0.1: the 429s track load again


class RetryAfterScope:
    """The scope a 429's Retry-After applies to, and why (for `status`)."""

    __slots__ = (
        "_all", "_all_429", "_head", "_head_429", "_heads", "noise_share", "reason", "recent_share",
        "scope", "setting", "verdict",
    )  # fmt: skip

    def __init__(self, setting: ScopeSetting) -> None:
        self.setting: ScopeSetting = setting
        self.scope: Scope = "request" if setting == "request" else "bucket"
        self.verdict: Literal["none", "load", "noise"] = "none"
        self.noise_share = 0.0  # the 429 share judged noise
        self.recent_share = 0.0  # EWMA of the 429 share since then
        self.reason = {
            "auto": "auto: no verdict yet, a Retry-After pauses the bucket",
            "bucket": "configured: bucket",
            "request": "configured: request",
        }[setting]
        self._heads: list[tuple[int, int]] = []  # permit ranges (after, up to] of recent heads
        self._head = self._head_429 = 0
        self._all = self._all_429 = 0

    def on_pause(self, last_granted: int) -> None:
        """A new whole-bucket pause began; the next `HEAD` grants are its head."""
        if self.setting != "auto":
            return
        self._heads.append((last_granted, last_granted + HEAD))
        del self._heads[:-4]  # heads still in flight: a few at most

    def observe(self, permit: int | None, limited: bool) -> None:
        """A report (a 429 or a success); only reports that echo their permit can be heads."""
        if self.setting != "auto":
            return
        if self.scope == "request":
            self.recent_share += _EWMA_ALPHA * (limited - self.recent_share)
            if self.recent_share > _RISE[0] * self.noise_share + _RISE[1]:
                self._judged(
                    "load", f"the 429 share rose to {self.recent_share:.0%} from {self.noise_share:.0%}"
                )
            return
        if permit is None:
            return
        self._all += 1
        self._all_429 += limited
        if any(lo < permit <= hi for lo, hi in self._heads):
            self._head += 1
            self._head_429 += limited
            self._judge()

    def _judge(self) -> None:
        head, head_429 = self._head, self._head_429
        if head < MIN_HEAD or self._all == 0:
            return
        head_share = head_429 / head
        share = self._all_429 / self._all
        if head_429 >= MIN_HEAD_429 and head_share >= _SAME_SHARE * share:
            self.noise_share = self.recent_share = max(share, head_share)
            self._judged(
                "noise", f"429s came back at {head_share:.0%} right after pauses ({share:.0%} overall)"
            )
        elif head >= _FORGET_AT:
            self._head //= 2
            self._head_429 //= 2
            self._all //= 2
            self._all_429 //= 2
            self._judged(
                "load", f"requests right after pauses got {head_share:.0%} 429s ({share:.0%} overall)"
            )

    def _judged(self, verdict: Literal["load", "noise"], why: str) -> None:
        self.verdict = verdict
        if verdict == "noise":
            self.scope = "request"
            self.reason = f"auto: {why}: load-unrelated, a Retry-After holds only its request"
            self._reset()
        else:
            if self.scope == "request":
                self._reset()
            self.scope = "bucket"
            self.reason = f"auto: {why}: the 429s track load, a Retry-After pauses the bucket"

    def describe(self) -> dict[str, str]:
        """For `status`: the scope in force, the setting, and why."""
        return {"scope": self.scope, "setting": self.setting, "why": self.reason}

    def _reset(self) -> None:
        self._heads.clear()
        self._head = self._head_429 = self._all = self._all_429 = 0
