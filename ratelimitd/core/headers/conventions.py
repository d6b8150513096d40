"""How one provider writes its rate-limit headers, as its documentation says.

Pure data, carried by a provider profile (`ratelimitd.core.headers.profiles`) into
`parse_headers`. Without it the parser reads every header by its family's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.core.headers.plausibility import DelayUnit

__all__ = ("DEFAULT_CONVENTIONS", "HeaderConventions")


def _empty() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderConventions:
    """What a provider's documentation says its headers mean, where the headers do not say.

    * `delay_unit`: the unit of a bare-number reset that is not a unix time
      (`X-Rate-Limit-Reset: 600000` in milliseconds is ten minutes).
    * `windows`: unit -> the window its limit header counts over, in seconds, where the
      headers do not announce one: Groq sends per-*day* request limits under OpenAI's
      per-minute names (`{"requests": 86400}`); a list-valued `X-RateLimit-Limit` is read
      from the member with this window.
    * `quota_windows`: unit -> the longest period the provider documents a quota over (a
      daily quota: 86400); a unit at 0 until a reset this far away is believed even past
      `max_pause`. A `windows` entry counts as well.
    """

    delay_unit: DelayUnit = "seconds"
    windows: Mapping[str, float] = field(default_factory=_empty)
    quota_windows: Mapping[str, float] = field(default_factory=_empty)

    def evidence_windows(self) -> dict[str, float]:
        """Unit -> the longest documented window (header window or quota period)."""
        out = dict(self.quota_windows)
        for unit, window in self.windows.items():
            out[unit] = max(window, out.get(unit, 0.0))
        return out


#: Every family's defaults: delays in seconds, no documented windows.
DEFAULT_CONVENTIONS = HeaderConventions()
