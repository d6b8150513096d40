"""The header families, which header names belong to each, and what their units mean.

Pure: shared by the general parser (`parse`) and the per-shape plans (`plan`), so both read
a header name and build a unit the same way.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from ratelimitd.core.headers import values as hv

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.core.headers.conventions import HeaderConventions
    from ratelimitd.core.headers.hint import UnitHint

__all__ = (
    "CROSSREF_NAMES",
    "FAMILIES",
    "FAMILY_ANTHROPIC",
    "FAMILY_CROSSREF",
    "FAMILY_GITHUB",
    "FAMILY_IETF",
    "FAMILY_OPENAI",
    "FAMILY_RETRY_AFTER",
    "GITHUB_NAMES",
    "GITHUB_RESOURCE",
    "GITHUB_WINDOWS",
    "IETF_NAMES",
    "LIST_FIELDS",
    "PRIORITY",
    "RETRY_NAMES",
    "documented_window",
    "llm_name",
    "primary_unit",
)

FAMILY_RETRY_AFTER: Final = "retry_after"
FAMILY_OPENAI: Final = "openai"
FAMILY_ANTHROPIC: Final = "anthropic"
FAMILY_GITHUB: Final = "github"
FAMILY_IETF: Final = "ietf"
FAMILY_CROSSREF: Final = "crossref"
FAMILIES: Final = frozenset(
    {
        FAMILY_RETRY_AFTER,
        FAMILY_OPENAI,
        FAMILY_ANTHROPIC,
        FAMILY_GITHUB,
        FAMILY_IETF,
        FAMILY_CROSSREF,
    }
)
# When two trusted families describe the same unit, the first one here wins (whole
# unit, so a limit is never paired with another family's window).
PRIORITY: Final = (FAMILY_ANTHROPIC, FAMILY_OPENAI, FAMILY_GITHUB, FAMILY_CROSSREF, FAMILY_IETF)

# OpenAI and Anthropic document their limits per minute; the headers do not say it.
_PER_MINUTE: Final = 60.0
# GitHub `x-ratelimit-resource` -> window, from docs.github.com "Rate limits for the REST
# API" (core: per hour) and "Search" (search: 30/minute, code_search: 10/minute).
GITHUB_WINDOWS: Final = {"core": 3600.0, "graphql": 3600.0, "search": 60.0, "code_search": 60.0}

_OPENAI_NAME: Final = re.compile(r"x-ratelimit-(limit|remaining|reset)-([a-z0-9_-]+)")
_ANTHROPIC_NAME: Final = re.compile(r"anthropic-ratelimit-([a-z0-9_-]+?)-(limit|remaining|reset)")
RETRY_NAMES: Final = ("retry-after-ms", "x-amz-retry-after", "retry-after")  # precision first
GITHUB_NAMES: Final = frozenset(
    {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-used"}
)
GITHUB_RESOURCE: Final = "x-ratelimit-resource"
CROSSREF_NAMES: Final = frozenset(
    {"x-rate-limit-limit", "x-rate-limit-interval", "x-rate-limit-remaining", "x-rate-limit-reset"}
)
IETF_NAMES: Final = frozenset(
    {"ratelimit", "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"}
)
# Same-name fields of these combine into one comma-separated list (RFC 9110 §5.3).
LIST_FIELDS: Final = frozenset({"ratelimit", "ratelimit-policy", "ratelimit-limit", "x-ratelimit-limit"})

# Header name -> (family, key, unit) for the OpenAI and Anthropic families, None for any
# other name. Responses repeat the same names, so each is matched once; bounded.
_LLM_NAMES: dict[str, tuple[str, str, str] | None] = {}
_LLM_NAMES_MAX: Final = 4096


def llm_name(name: str) -> tuple[str, str, str] | None:
    """(family, key, unit) of an OpenAI or Anthropic header name (lower case), else None."""
    known = _LLM_NAMES.get(name, _LLM_NAMES)
    if known is not _LLM_NAMES:
        return known  # type: ignore[return-value]  # the sentinel is the dict itself
    if match := _OPENAI_NAME.fullmatch(name):
        found: tuple[str, str, str] | None = (FAMILY_OPENAI, match.group(1), hv.unit_name(match.group(2)))
    elif match := _ANTHROPIC_NAME.fullmatch(name):
        found = (FAMILY_ANTHROPIC, match.group(2), hv.unit_name(match.group(1)))
    else:
        found = None
    if len(_LLM_NAMES) >= _LLM_NAMES_MAX:
        _LLM_NAMES.clear()
    _LLM_NAMES[name] = found
    return found


def documented_window(family: str, unit: str, conventions: HeaderConventions) -> float | None:
    """The window a limit counts over when the headers do not say: the provider's documented
    window for this unit (Groq: requests per day), else OpenAI's and Anthropic's minute."""
    documented = conventions.windows.get(unit)
    if documented is None and family in (FAMILY_OPENAI, FAMILY_ANTHROPIC):
        documented = _PER_MINUTE
    return documented


def primary_unit(units: Mapping[str, UnitHint]) -> str:
    """`requests` if present; else the exhausted unit with the longest reset; else the first."""
    if "requests" in units or not units:
        return "requests"
    exhausted = [(h.reset_after or 0.0, name) for name, h in units.items() if h.exhausted]
    if exhausted:
        return max(exhausted)[1]
    return next(iter(units))
