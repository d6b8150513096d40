"""Built-in profiles of LLM APIs: starting limits, trusted header families, header conventions.

Pure data; each number cites its source in a comment here and in docs/headers.md. Limits
start at or below the documented limit of the lowest paid tier (or of the free tier where
that is the common case), so that learning and header pacing find the real rate from one
that works.
"""

from __future__ import annotations

from typing import Final

from ratelimitd.core.headers.conventions import HeaderConventions
from ratelimitd.core.headers.parse import (
    FAMILY_ANTHROPIC,
    FAMILY_GITHUB,
    FAMILY_OPENAI,
    FAMILY_RETRY_AFTER,
)
from ratelimitd.core.headers.profile import Profile, ProfileLimit

__all__ = ("LLM_PROFILES",)

_SECOND: Final = 1.0
_MINUTE: Final = 60.0
_DAY: Final = 86_400.0
_RETRY_ONLY: Final = frozenset({FAMILY_RETRY_AFTER})

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

# Groq (console.groq.com/docs/rate-limits): limits per organisation and model; the free tier
# of llama-3.1-8b-instant is 30 RPM, 14.4K RPD, 6K TPM, 500K TPD. The headers reuse OpenAI's
# names, but "x-ratelimit-limit-requests ... Always refers to Requests Per Day (RPD)" and
# "x-ratelimit-limit-tokens ... Always refers to Tokens Per Minute (TPM)"; resets are Go
# durations (`2m59.56s`), retry-after is in seconds and only on 429s.
_GROQ = Profile(
    name="groq",
    description="Groq API, free tier (llama-3.1-8b-instant): 30 requests and 6,000 tokens a minute.",
    doc_url="https://console.groq.com/docs/rate-limits",
    limits=(
        ProfileLimit(unit="requests", rate=30, period_seconds=_MINUTE, burst=5, source="free tier, 30 RPM"),
        ProfileLimit(
            unit="tokens", rate=6_000, period_seconds=_MINUTE, burst=6_000, source="free tier, 6K TPM"
        ),
    ),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_OPENAI}),
    hosts=("api.groq.com",),
    headers=HeaderConventions(
        windows={"requests": _DAY, "tokens": _MINUTE},
        quota_windows={"requests": _DAY, "tokens": _DAY},  # RPD and TPD
    ),
)

# Mistral (help.mistral.ai "What are the limits of the free tier"): 1 request per second,
# 500,000 tokens per minute, 1 billion tokens per month, per organisation; paid tiers are
# shown only in the console. Mistral documents no rate-limit headers (its responses carry
# undocumented `x-ratelimitbysize-*` ones, not read); only Retry-After is trusted.
_MISTRAL = Profile(
    name="mistral",
    description="Mistral API, free tier: 1 request a second and 500,000 tokens a minute.",
    doc_url="https://docs.mistral.ai/deployment/laplateforme/tier/",
    limits=(
        ProfileLimit(unit="requests", rate=1, period_seconds=_SECOND, burst=1, source="free tier, 1 RPS"),
        ProfileLimit(unit="tokens", rate=500_000, period_seconds=_MINUTE, burst=500_000, source="free tier"),
    ),
    trust_headers=_RETRY_ONLY,
    hosts=("api.mistral.ai",),
)

# Google Gemini API (ai.google.dev/gemini-api/docs/rate-limits): RPM, TPM (input) and RPD
# per project and model; RPD resets at midnight Pacific time. The free tier of Gemini 2.5
# Flash was published as 10 RPM, 250,000 TPM, 500 RPD (current figures are shown only in AI
# Studio). No rate-limit headers: a 429 RESOURCE_EXHAUSTED carries its delay in the body.
_GEMINI = Profile(
    name="gemini",
    description="Google Gemini API, free tier (Gemini 2.5 Flash): 10 requests and 250,000 tokens a minute.",
    doc_url="https://ai.google.dev/gemini-api/docs/rate-limits",
    limits=(
        ProfileLimit(unit="requests", rate=10, period_seconds=_MINUTE, burst=2, source="free tier, 10 RPM"),
        ProfileLimit(unit="tokens", rate=250_000, period_seconds=_MINUTE, burst=250_000, source="free tier"),
    ),
    trust_headers=_RETRY_ONLY,
    hosts=("generativelanguage.googleapis.com",),
    headers=HeaderConventions(quota_windows={"requests": _DAY}),  # RPD
)

# Cohere (docs.cohere.com/docs/rate-limits): Chat 500 requests a minute with a production
# key, 20 with a trial key (trial keys: 1,000 calls a month). No rate-limit headers are
# documented; only Retry-After is trusted.
_COHERE = Profile(
    name="cohere",
    description="Cohere API, production key: Chat 500 requests a minute (trial keys: 20).",
    doc_url="https://docs.cohere.com/docs/rate-limits",
    limits=(
        ProfileLimit(
            unit="requests", rate=500, period_seconds=_MINUTE, burst=8, source="production key, Chat"
        ),
    ),
    trust_headers=_RETRY_ONLY,
    hosts=("api.cohere.com", "api.cohere.ai"),
)

# Together AI: tier 1 (credit card added) 600 RPM and 180,000 TPM for chat models
# (docs.together.ai/docs/rate-limits, tier table), measured internally per second ("our rate
# limits are currently measured in requests per second (RPS) and tokens per second (TPS)").
# support.together.ai "Rate limits" documents x-ratelimit-limit, x-ratelimit-remaining and
# x-ratelimit-reset ("the time until the rate limit ... resets"): the GitHub-style names,
# counted per second.
_TOGETHER = Profile(
    name="together",
    description="Together AI, tier 1: 600 requests and 180,000 tokens a minute (counted per second).",
    doc_url="https://docs.together.ai/docs/rate-limits",
    limits=(
        ProfileLimit(unit="requests", rate=600, period_seconds=_MINUTE, burst=10, source="tier 1, 600 RPM"),
        ProfileLimit(unit="tokens", rate=180_000, period_seconds=_MINUTE, burst=180_000, source="tier 1"),
    ),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_GITHUB}),
    hosts=("api.together.xyz", "api.together.ai"),
    headers=HeaderConventions(windows={"requests": _SECOND}),
)

# OpenRouter (openrouter.ai/docs/api-reference/limits): `:free` model variants allow 20
# requests a minute and 50 a day (1,000 a day after buying 10 credits); paid models are
# limited by their upstream providers. Platform 429s carry X-RateLimit-Limit, -Remaining
# and -Reset; the reset is a unix time in milliseconds (read by magnitude).
_OPENROUTER = Profile(
    name="openrouter",
    description="OpenRouter, free model variants: 20 requests a minute, 50 a day (1,000 with credits).",
    doc_url="https://openrouter.ai/docs/api-reference/limits",
    limits=(ProfileLimit(unit="requests", rate=20, period_seconds=_MINUTE, burst=3, source=":free, 20 RPM"),),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_GITHUB}),
    hosts=("openrouter.ai",),
    headers=HeaderConventions(quota_windows={"requests": _DAY}),  # the daily :free cap
)

# Azure OpenAI (learn.microsoft.com "Azure OpenAI quotas and limits"; "Azure OpenAI 429:
# token and request rate limits explained"): a deployment's TPM is its quota, and RPM is set
# in proportion: 6 RPM per 1,000 TPM for the older chat models; RPM is enforced over 1- or
# 10-second windows. The profile assumes a 10,000 TPM deployment. Headers: OpenAI's names
# (x-ratelimit-remaining-requests/-tokens), retry-after-ms and retry-after. Some APIs send
# `x-ratelimit-limit-tokens: -1` (no value): ignored as malformed.
_AZURE_OPENAI = Profile(
    name="azure-openai",
    description="Azure OpenAI, a 10,000 TPM deployment: 60 requests and 10,000 tokens a minute.",
    doc_url="https://learn.microsoft.com/en-us/azure/ai-foundry/openai/quotas-limits",
    limits=(
        ProfileLimit(unit="requests", rate=60, period_seconds=_MINUTE, burst=1, source="6 RPM per 1,000 TPM"),
        ProfileLimit(unit="tokens", rate=10_000, period_seconds=_MINUTE, burst=10_000, source="10K TPM"),
    ),
    trust_headers=frozenset({FAMILY_RETRY_AFTER, FAMILY_OPENAI}),
    hosts=("openai.azure.com",),
)

# DeepSeek (api-docs.deepseek.com/quick_start/rate_limit): "DeepSeek API does NOT constrain
# user's rate limit"; under load a request waits (keep-alive lines) or gets 429/503. No rate
# and no headers are documented: the profile starts at 10 requests a second, a cautious
# default of ours, and trusts only Retry-After.
_DEEPSEEK = Profile(
    name="deepseek",
    description="DeepSeek API: no documented limit; starts at 10 requests a second (our default).",
    doc_url="https://api-docs.deepseek.com/quick_start/rate_limit",
    limits=(ProfileLimit(unit="requests", rate=10, period_seconds=_SECOND, burst=10, source="undocumented"),),
    trust_headers=_RETRY_ONLY,
    hosts=("api.deepseek.com",),
)

#: The LLM API profiles, in the order docs/headers.md lists them.
LLM_PROFILES: Final = (
    _OPENAI,
    _ANTHROPIC,
    _GROQ,
    _MISTRAL,
    _GEMINI,
    _COHERE,
    _TOGETHER,
    _OPENROUTER,
    _AZURE_OPENAI,
    _DEEPSEEK,
)
