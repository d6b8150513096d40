"""Provider profiles: contents, consistency with the header parser, overrides."""

from __future__ import annotations

import dataclasses
from email.utils import parsedate_to_datetime

import pytest

from ratelimitd.core.headers.parse import FAMILIES, parse_headers
from ratelimitd.core.headers.profiles import PROFILES, Profile, ProfileLimit, get_profile

EXPECTED = (
    # LLM APIs
    "openai",
    "anthropic",
    "groq",
    "mistral",
    "gemini",
    "cohere",
    "together",
    "openrouter",
    "azure-openai",
    "deepseek",
    # GitHub and scholarly APIs
    "github",
    "crossref",
    "semantic-scholar",
    "datacite",
    "openalex",
    "unpaywall",
    "arxiv",
    "ncbi-eutils",
    "orcid",
    "zenodo",
    "europe-pmc",
)

# One real response per provider that sends rate-limit headers (sources in
# tests/unit/test_headers.py): the profile's trusted families must pick them up.
REAL_HEADERS = {
    "openai": {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59"},
    "anthropic": {
        "anthropic-ratelimit-requests-limit": "5",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2024-03-26T20:00:00Z",
    },
    "github": {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4966",
        "x-ratelimit-reset": "1372700873",
        "x-ratelimit-resource": "core",
    },
    "crossref": {"x-rate-limit-limit": "50", "x-rate-limit-interval": "1s"},
}


def test_every_issue_profile_exists() -> None:
    assert set(EXPECTED) == set(PROFILES)
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert get_profile(name) is profile


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_profile_is_well_formed(profile: Profile) -> None:
    assert profile.description
    assert profile.doc_url.startswith("https://")
    assert profile.hosts
    assert "requests" in profile.units
    assert profile.trust_headers <= FAMILIES
    # the provider's explicit instruction is always honoured
    assert "retry_after" in profile.trust_headers
    for limit in profile.limits:
        assert limit.rate_per_second > 0
        assert limit.burst >= 1
    assert profile.as_dict()["trust_headers"] == sorted(profile.trust_headers)


@pytest.mark.parametrize("name", REAL_HEADERS)
def test_trusted_families_read_the_providers_own_headers(name: str) -> None:
    profile = PROFILES[name]
    now = parsedate_to_datetime("Mon, 01 Jul 2013 17:27:06 GMT").timestamp()
    hint = parse_headers(REAL_HEADERS[name], status=200, now_wall=now, trust=profile.trust_headers)
    assert hint.requests is not None
    assert hint.ignored_families == frozenset()
    others = [other for other in REAL_HEADERS if other != name]
    for other in others:
        foreign = parse_headers(REAL_HEADERS[other], status=200, now_wall=now, trust=profile.trust_headers)
        assert foreign.units == {}, (name, other)
        assert foreign.ignored_families, (name, other)


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        # GitHub's documented authenticated limit: 5,000 an hour
        ("github", REAL_HEADERS["github"]),
        # Crossref's documented 50 requests a second
        ("crossref", REAL_HEADERS["crossref"]),
    ],
)
def test_profile_starts_at_or_below_the_announced_rate(name: str, headers: dict[str, str]) -> None:
    hint = parse_headers(headers, status=200, now_wall=1_372_700_000.0)
    announced = hint.announced_rate_per_second("requests")
    limit = PROFILES[name].limit("requests")
    assert announced is not None
    assert limit is not None
    assert limit.rate_per_second <= announced


def test_semantic_scholar_is_one_per_second_without_burst() -> None:
    limit = PROFILES["semantic-scholar"].limit("requests")
    assert limit is not None
    assert (limit.rate_per_second, limit.burst) == (1.0, 1)


def test_token_bursts_admit_a_full_minute_of_tokens() -> None:
    # A request larger than the burst could never be granted (cost_too_large).
    token_units = [(name, "tokens") for name in ("openai", "groq", "mistral", "gemini", "together")]
    for name, unit in [*token_units, ("azure-openai", "tokens"), ("anthropic", "input_tokens")]:
        limit = PROFILES[name].limit(unit)
        assert limit is not None
        assert limit.burst == limit.rate


def test_override_replaces_adds_and_drops_units() -> None:
    base = PROFILES["openai"]
    tier3 = base.override(
        limits=[
            ProfileLimit(unit="requests", rate=5000, period_seconds=60, burst=80),
            ProfileLimit(unit="images", rate=50, period_seconds=60, burst=5),
        ],
        drop_units=["tokens"],
        trust_headers=frozenset({"retry_after"}),
    )
    assert tier3.units == ("requests", "images")
    requests = tier3.limit("requests")
    assert requests is not None
    assert requests.rate == 5000
    assert tier3.trust_headers == frozenset({"retry_after"})
    # the preset itself is unchanged
    assert base.units == ("requests", "tokens")
    assert base.trust_headers == frozenset({"retry_after", "openai"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trust_headers": frozenset({"retry_after", "x-custom"})}, "trust_headers"),
        ({"drop_units": ["requests", "tokens"]}, "at least one unit"),
    ],
)
def test_override_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PROFILES["openai"].override(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"), [("rate", 0.0), ("period_seconds", -1.0), ("burst", float("nan"))]
)
def test_limit_rejects_non_positive_numbers(field: str, value: float) -> None:
    good = {"unit": "requests", "rate": 1.0, "period_seconds": 1.0, "burst": 1.0}
    with pytest.raises(ValueError, match=f"requests.{field}"):
        ProfileLimit(**{**good, field: value})  # type: ignore[arg-type]


def test_duplicate_units_are_rejected() -> None:
    limit = ProfileLimit(unit="requests", rate=1, period_seconds=1, burst=1)
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(PROFILES["github"], limits=(limit, limit))


def test_profiles_are_read_only_and_unknown_names_are_named() -> None:
    with pytest.raises(TypeError):
        PROFILES["mine"] = PROFILES["github"]  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown profile 'opanai'; known: anthropic, arxiv, azure-openai"):
        get_profile("opanai")
