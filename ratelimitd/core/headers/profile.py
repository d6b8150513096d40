"""A provider profile: starting limits, trusted header families, header conventions, docs.

Pure data; the presets are in `presets_llm` (LLM APIs) and `presets_data` (GitHub and
scholarly APIs), the registry in
`profiles`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ratelimitd.core.headers.conventions import DEFAULT_CONVENTIONS, HeaderConventions
from ratelimitd.core.headers.parse import (
    FAMILIES,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ("Profile", "ProfileLimit")


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
