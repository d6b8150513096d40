"""Built-in profiles of GitHub and the scholarly APIs research pipelines call most.

Pure data; each number cites its source in a comment here and in docs/headers.md. Where a
provider documents a rate but no headers, the profile is built from the rate and trusts
only Retry-After.
"""

from __future__ import annotations

from typing import Final

from ratelimitd.core.headers.conventions import HeaderConventions
from ratelimitd.core.headers.parse import FAMILY_CROSSREF, FAMILY_GITHUB, FAMILY_RETRY_AFTER
from ratelimitd.core.headers.profile import Profile, ProfileLimit

__all__ = ("DATA_PROFILES",)

_SECOND: Final = 1.0
_MINUTE: Final = 60.0
_HOUR: Final = 3600.0
_DAY: Final = 86_400.0
_RETRY_ONLY: Final = frozenset({FAMILY_RETRY_AFTER})

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

# OpenAlex (docs.openalex.org/how-to-use-the-api/rate-limits-and-authentication): a free API
# key gives 100,000 credits a day (a list request costs 1, a singleton 0) and every user at
# most 100 requests a second; over either, 429. The profile starts at a tenth of the
# per-second ceiling; the daily quota makes a reset up to a day away believable.
_OPENALEX = Profile(
    name="openalex",
    description="OpenAlex API: at most 100 requests a second and 100,000 credits a day; starts at 10/s.",
    doc_url="https://docs.openalex.org/how-to-use-the-api/rate-limits-and-authentication",
    limits=(ProfileLimit(unit="requests", rate=10, period_seconds=_SECOND, burst=10, source="100/s max"),),
    trust_headers=_RETRY_ONLY,
    hosts=("api.openalex.org",),
    headers=HeaderConventions(quota_windows={"requests": _DAY}),
)

# Unpaywall (unpaywall.org/products/api): "Please limit use to 100,000 calls per day", with
# an email parameter on every call; no per-second rate and no headers are documented, so the
# profile spreads the daily figure evenly.
_UNPAYWALL = Profile(
    name="unpaywall",
    description="Unpaywall API: 100,000 calls a day, spread evenly (about 1.16 a second).",
    doc_url="https://unpaywall.org/products/api",
    limits=(
        ProfileLimit(unit="requests", rate=100_000, period_seconds=_DAY, burst=10, source="100,000/day"),
    ),
    trust_headers=_RETRY_ONLY,
    hosts=("api.unpaywall.org",),
    headers=HeaderConventions(quota_windows={"requests": _DAY}),
)

# arXiv (info.arxiv.org/help/api/tou.html): "make no more than one request every three
# seconds, and limit requests to a single connection at a time"; no rate-limit headers.
_ARXIV = Profile(
    name="arxiv",
    description="arXiv API: one request every three seconds, one connection at a time.",
    doc_url="https://info.arxiv.org/help/api/tou.html",
    limits=(ProfileLimit(unit="requests", rate=1, period_seconds=3.0, burst=1, source="1 per 3 s"),),
    trust_headers=_RETRY_ONLY,
    hosts=("export.arxiv.org",),
)

# NCBI E-utilities (support.nlm.nih.gov/kbArticle/?pn=KA-05510): "Up to 3 rps: this is the
# default limit. 3 to 10 rps: permitted with an API key. Exceeding 10 rps will result in
# throttling of requests with a corresponding 429 error code." The profile assumes no key.
_NCBI_EUTILS = Profile(
    name="ncbi-eutils",
    description="NCBI E-utilities: 3 requests a second without an API key (10 with one).",
    doc_url="https://www.ncbi.nlm.nih.gov/books/NBK25497/",
    limits=(ProfileLimit(unit="requests", rate=3, period_seconds=_SECOND, burst=3, source="no API key"),),
    trust_headers=_RETRY_ONLY,
    hosts=("eutils.ncbi.nlm.nih.gov",),
)

# ORCID public API: 24 requests a second with a burst of 40 queued requests; past the burst,
# 503 (ORCID's API documentation, members.orcid.org/api, as quoted by the rorcid package:
# rdrr.io/cran/rorcid/man/rorcid-package.html). No rate-limit headers are documented.
_ORCID = Profile(
    name="orcid",
    description="ORCID public API: 24 requests a second, bursts of 40.",
    doc_url="https://info.orcid.org/documentation/",
    limits=(ProfileLimit(unit="requests", rate=24, period_seconds=_SECOND, burst=40, source="public API"),),
    trust_headers=_RETRY_ONLY,
    hosts=("pub.orcid.org", "api.orcid.org"),
)

# Zenodo (developers.zenodo.org, "Rate Limiting"): guests 60 requests a minute and 2,000 an
# hour, authenticated users 100 and 5,000. Headers: X-RateLimit-Limit ("maximum number of
# requests per minute"), X-RateLimit-Remaining, X-RateLimit-Reset ("reset time", a unix
# time, read by magnitude). The profile takes the guest hour with a burst small enough that
# the first minute stays under 60.
_ZENODO = Profile(
    name="zenodo",
    description="Zenodo REST API, guest: 2,000 requests an hour and at most 60 a minute.",
    doc_url="https://developers.zenodo.org/#rate-limiting",
    limits=(ProfileLimit(unit="requests", rate=2_000, period_seconds=_HOUR, burst=10, source="guest"),),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_GITHUB}),
    hosts=("zenodo.org",),
    headers=HeaderConventions(windows={"requests": _MINUTE}, quota_windows={"requests": _HOUR}),
)

# Europe PMC (europepmc.org/RestfulWebService): the RESTful service documents neither a rate
# nor rate-limit headers. Third-party guides repeat "10 requests per second"; the profile
# starts at half that, a cautious default of ours.
_EUROPE_PMC = Profile(
    name="europe-pmc",
    description="Europe PMC REST API: no documented limit; starts at 5 requests a second (our default).",
    doc_url="https://europepmc.org/RestfulWebService",
    limits=(ProfileLimit(unit="requests", rate=5, period_seconds=_SECOND, burst=5, source="undocumented"),),
    trust_headers=_RETRY_ONLY,
    hosts=("www.ebi.ac.uk",),
)

#: GitHub and the scholarly API profiles, in the order docs/headers.md lists them.
DATA_PROFILES: Final = (
    _GITHUB,
    _CROSSREF,
    _SEMANTIC_SCHOLAR,
    _DATACITE,
    _OPENALEX,
    _UNPAYWALL,
    _ARXIV,
    _NCBI_EUTILS,
    _ORCID,
    _ZENODO,
    _EUROPE_PMC,
)
