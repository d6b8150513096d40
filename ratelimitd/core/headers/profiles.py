"""Provider profiles: overridable presets of starting limits, trusted header families, docs.

Pure data. A provider selects one in config (`profile = "openai"`); the config loader
turns each `ProfileLimit` into a limiter spec and passes `trust_headers` and the header
conventions to `ratelimitd.core.headers.parse.parse_headers`. Every number cites its
source (docs/headers.md lists them); all start at or below the provider's documented limit
for the lowest paid tier, because learning and header pacing can only find the real rate
from a rate that works.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from ratelimitd.core.headers.presets_data import DATA_PROFILES
from ratelimitd.core.headers.presets_llm import LLM_PROFILES
from ratelimitd.core.headers.profile import Profile, ProfileLimit

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("PROFILES", "Profile", "ProfileLimit", "get_profile")

#: Every built-in profile by name (read-only).
PROFILES: Final[Mapping[str, Profile]] = MappingProxyType(
    {profile.name: profile for profile in (*LLM_PROFILES, *DATA_PROFILES)}
)


def get_profile(name: str) -> Profile:
    """The built-in profile `name`.

    :raises ValueError: naming the known profiles, for the config loader to report.
    """
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"profile: unknown profile {name!r}; known: {known}") from None
