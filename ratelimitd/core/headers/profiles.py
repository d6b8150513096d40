"""Provider profiles: overridable presets of starting limits, trusted header families, docs.

Pure data. A provider selects one in config (`profile = "openai"`); the config loader
turns each `ProfileLimit` into a limiter spec and passes `trust_headers` to
`ratelimitd.core.headers.parse.parse_headers(..., trust=...)`. Every number cites its source; all
start at or below the provider's documented limit for the lowest paid tier, because
learning and header pacing can only find the real rate from a rate that works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from ratelimitd.core.headers.conventions import DEFAULT_CONVENTIONS, HeaderConventions
from ratelimitd.core.headers.parse import (
    FAMILIES,
    FAMILY_ANTHROPIC,
    FAMILY_CROSSREF,
    FAMILY_GITHUB,
    FAMILY_OPENAI,
    FAMILY_RETRY_AFTER,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ("PROFILES", "Profile", "ProfileLimit", "get_profile")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileLimit:
    """`rate` permits of `unit` per `period_seconds`, with at most `burst` at once."""

    unit: str
    rate: float
    period_seconds: float
    burst: float
    #: Where the number comes from (a URL or a short note), shown by `check-config`.
    source: str = ""

    def __post_init__(self) -> None:
        if not self.unit:
            raise ValueError("unit: must be a non-empty string")
        for name in ("rate", "period_seconds", "burst"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{self.unit}.{name}: must be a number > 0, got {value!r}")

    @property
    def rate_per_second(self) -> float:
        return self.rate / self.period_seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A preset for one provider. `override()` returns a changed copy; nothing mutates."""

    name: str
    description: str
    doc_url: str
    limits: tuple[ProfileLimit, ...]
    #: Header families (see `ratelimitd.core.headers.parse.FAMILIES`) whose values this provider sends.
    trust_headers: frozenset[str]
    #: API hosts, so an HTTP integration can map a request URL to this profile.
    hosts: tuple[str, ...] = ()
    #: What the documentation says the headers mean where they do not say it themselves.
    headers: HeaderConventions = DEFAULT_CONVENTIONS

    def __post_init__(self) -> None:
        unknown = sorted(self.trust_headers - FAMILIES)
        if unknown:
            known = ", ".join(sorted(FAMILIES))
            raise ValueError(f"trust_headers: unknown families {unknown}; known: {known}")
        units = [limit.unit for limit in self.limits]
        if len(set(units)) != len(units):
            raise ValueError(f"limits: a unit appears twice in {units}")
        if not units:
            raise ValueError(f"limits: profile {self.name!r} needs at least one unit")

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(limit.unit for limit in self.limits)

    def limit(self, unit: str) -> ProfileLimit | None:
        """The limit for `unit`, or None when the profile does not limit it."""
        return next((limit for limit in self.limits if limit.unit == unit), None)

    def override(
        self,
        *,
        limits: Iterable[ProfileLimit] = (),
        drop_units: Iterable[str] = (),
        trust_headers: frozenset[str] | None = None,
    ) -> Profile:
        """A copy where `limits` replace same-unit limits (or add units), `drop_units` go,
        and `trust_headers` (when given) replaces the trusted families.

        :raises ValueError: an unknown family, a bad number, or no unit left.
        """
        by_unit = {limit.unit: limit for limit in self.limits}
        for unit in drop_units:
            by_unit.pop(unit, None)
        for limit in limits:
            by_unit[limit.unit] = limit
        return replace(
            self,
            limits=tuple(by_unit.values()),
            trust_headers=self.trust_headers if trust_headers is None else trust_headers,
        )

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view for `check-config` and `status`."""
        return {
            "name": self.name,
            "description": self.description,
            "doc_url": self.doc_url,
            "hosts": list(self.hosts),
            "trust_headers": sorted(self.trust_headers),
            "headers": {
                "delay_unit": self.headers.delay_unit,
                "windows": dict(self.headers.windows),
                "quota_windows": dict(self.headers.quota_windows),
            },
            "limits": {
                limit.unit: {
                    "rate": limit.rate,
                    "period": limit.period_seconds,
                    "burst": limit.burst,
                    "rate_per_second": limit.rate_per_second,
                    "source": limit.source,
                }
                for limit in self.limits
            },
        }


_MINUTE: Final = 60.0
_HOUR: Final = 3600.0

# OpenAI, usage tier 1, GPT-4o: 500 RPM and 30,000 TPM (tier table in the OpenAI rate
# limits guide, platform.openai.com/docs/guides/rate-limits, as tabulated at
# ai-buzz.com/ai-openai-rate-limits). OpenAI may enforce a per-minute limit over shorter
# periods, so the request burst is about one second's worth; a token burst of a full
# minute lets one large prompt through (anything larger could never be granted).
_OPENAI = Profile(
    name="openai",
    description="OpenAI API, usage tier 1 (GPT-4o): 500 requests and 30,000 tokens a minute.",
    doc_url="https://platform.openai.com/docs/guides/rate-limits",
    limits=(
        ProfileLimit(unit="requests", rate=500, period_seconds=_MINUTE, burst=8, source="tier 1"),
        ProfileLimit(unit="tokens", rate=30_000, period_seconds=_MINUTE, burst=30_000),
    ),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_OPENAI}),
    hosts=("api.openai.com",),
)

# Anthropic, tier 1: 50 RPM; input/output tokens per minute vary by model (30,000-50,000
# ITPM, 8,000-10,000 OTPM in docs.anthropic.com/en/api/rate-limits as quoted by third
# parties); the lowest are used. Anthropic refills continuously (a token bucket).
_ANTHROPIC = Profile(
    name="anthropic",
    description=(
        "Anthropic Messages API, tier 1: 50 requests, 30,000 input and 8,000 output "
        "tokens a minute; headers are per unit (requests, tokens, input/output tokens)."
    ),
    doc_url="https://docs.anthropic.com/en/api/rate-limits",
    limits=(
        ProfileLimit(unit="requests", rate=50, period_seconds=_MINUTE, burst=5, source="tier 1"),
        ProfileLimit(unit="input_tokens", rate=30_000, period_seconds=_MINUTE, burst=30_000),
        ProfileLimit(unit="output_tokens", rate=8_000, period_seconds=_MINUTE, burst=8_000),
    ),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_ANTHROPIC}),
    hosts=("api.anthropic.com",),
)

# GitHub REST, authenticated: 5,000 requests per hour (docs.github.com/en/rest/
# using-the-rest-api/rate-limits-for-the-rest-api). Secondary limits (100 concurrent,
# 900 points a minute) forbid spending the hour at once, hence a small burst.
_GITHUB = Profile(
    name="github",
    description="GitHub REST API, authenticated: 5,000 requests an hour; 403 or 429 when over.",
    doc_url="https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api",
    limits=(
        ProfileLimit(unit="requests", rate=5000, period_seconds=_HOUR, burst=20, source="authenticated"),
    ),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_GITHUB}),
    hosts=("api.github.com",),
    # The core quota is per hour; the headers name it only through x-ratelimit-resource.
    headers=HeaderConventions(quota_windows={"requests": _HOUR}),
)

# Crossref REST: the public and polite pools were documented at 50 requests/s with 5
# concurrent requests (crossref.org/documentation/retrieve-metadata/rest-api/
# access-and-authentication); Crossref lowered the public and polite limits from
# 1 December 2025 ("Announcing changes to REST API rate limits", 2025-11-05). The profile
# starts at 10/s and trusts `x-rate-limit-limit`/`-interval`, which announce the pool's
# real figure on every response.
_CROSSREF = Profile(
    name="crossref",
    description="Crossref REST API, polite pool (send mailto): starts at 10 requests a second.",
    doc_url="https://www.crossref.org/documentation/retrieve-metadata/rest-api/access-and-authentication/",
    limits=(ProfileLimit(unit="requests", rate=10, period_seconds=1.0, burst=5, source="polite pool, 2025"),),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_CROSSREF}),
    hosts=("api.crossref.org",),
)

# Semantic Scholar Academic Graph with an API key: an introductory 1 request/s across all
# endpoints (api.semanticscholar.org product docs, summarised at apis.io/rate-limits/
# semantic-scholar); without a key, 100 requests per 5 minutes shared. It sends no
# rate-limit headers (books.ropensci.org/fulltext/rate-limits.html), only 429s.
_SEMANTIC_SCHOLAR = Profile(
    name="semantic-scholar",
    description="Semantic Scholar API with an API key: 1 request a second, no burst.",
    doc_url="https://www.semanticscholar.org/product/api",
    limits=(ProfileLimit(unit="requests", rate=1, period_seconds=1.0, burst=1, source="with API key"),),
    trust_headers=frozenset({FAMILY_RETRY_AFTER}),
    hosts=("api.semanticscholar.org",),
)

# DataCite REST: 3,000 requests per 5 minutes per IP authenticated, 1,000 identified
# (mailto or an e-mail in User-Agent), 500 anonymous (support.datacite.org/docs/
# rate-limit). The profile assumes "identified"; override to 3000/300 s with credentials.
_DATACITE = Profile(
    name="datacite",
    description=(
        "DataCite REST API, identified (mailto): 1,000 requests per 5 minutes per IP; 3,000 with credentials."
    ),
    doc_url="https://support.datacite.org/docs/rate-limit",
    limits=(ProfileLimit(unit="requests", rate=1000, period_seconds=300.0, burst=10, source="identified"),),
    trust_headers=frozenset({FAMILY_RETRY_AFTER}),
    hosts=("api.datacite.org",),
)

#: Every built-in profile by name (read-only).
PROFILES: Final[Mapping[str, Profile]] = MappingProxyType(
    {
        profile.name: profile
        for profile in (_OPENAI, _ANTHROPIC, _GITHUB, _CROSSREF, _SEMANTIC_SCHOLAR, _DATACITE)
    }
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
