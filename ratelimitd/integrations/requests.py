"""requests integration: an `HTTPAdapter` that takes a permit before each request.

Shell: for a request whose host maps to a provider it estimates the cost, acquires a
permit, sets the bucket's headers (its API key) and the idempotency key, sends, reports
the status and rate-limit headers (and the token usage of a JSON answer, once its body
was read), and with a retry policy retries and fails over across buckets.

    session = requests.Session()
    session.mount("https://api.crossref.org/", RateLimitAdapter(Client(), provider="crossref"))

This module is `ratelimitd.integrations.requests`; `import requests` below is the library.
"""

from __future__ import annotations

import random
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson
import requests
from requests.adapters import HTTPAdapter

from ratelimitd.client.errors import BadRequest, RatelimitdClientError
from ratelimitd.client.retry import DEFAULT_IDEMPOTENCY_HEADER, RetriesExhausted, RetryPolicy
from ratelimitd.client.retry_calls import Outcome, call_sync, error_reason, rate_limit_headers
from ratelimitd.integrations.bucket_headers import check_bucket_headers, header_names, headers_for
from ratelimitd.integrations.httpx_base import ONE_ATTEMPT, reads_usage, report_failed, used_units
from ratelimitd.integrations.tokens import estimate_body
from ratelimitd.integrations.usage_stream import UsageReader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from requests import PreparedRequest, Response

    from ratelimitd.client.retry_steps import AttemptContext
    from ratelimitd.client.sync import Client
    from ratelimitd.client.types import Cost, Permit

__all__ = ("NETWORK_ERRORS", "RateLimitAdapter", "token_cost")

#: What counts as `network_error`: reported, and retried by the policies that retry.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (requests.ConnectionError, requests.Timeout)


def token_cost(request: PreparedRequest) -> Cost:
    """`ratelimitd.httpx.token_cost` for a prepared request: tokens of LLM bodies, else 1."""
    body = request.body
    if request.method != "POST" or not isinstance(body, bytes | str):
        return 1
    if not (request.headers.get("Content-Type") or "").startswith("application/json"):
        return 1
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 1
    tokens = estimate_body(urllib.parse.urlsplit(request.url or "").path, decoded)
    return 1 if tokens is None else {"requests": 1.0, **tokens}


class RateLimitAdapter(HTTPAdapter):
    """Mount on a `requests.Session` for the hosts of a rate-limited API.

    :param client: the daemon client (`ratelimitd.client.Client`).
    :param hosts: request host (or `host:port`) -> provider; others pass through untouched.
    :param provider: the provider of every request instead.
    :param policy: a `RetryPolicy` or preset name to retry and fail over here; None (default):
        one attempt per request.
    :param bucket_headers: provider -> bucket -> headers set for that bucket (its API key);
        a bucket without headers is refused here.
    :param cost: a cost, or a function of the prepared request returning one (default
        `token_cost`).
    :param settle_usage: report the tokens a JSON answer's `usage` counted.
    :param adapter_options: passed on to `HTTPAdapter` (pool sizes, urllib3 `max_retries`).
    """

    def __init__(
        self,
        client: Client,
        *,
        hosts: Mapping[str, str] | None = None,
        provider: str | None = None,
        policy: RetryPolicy | str | None = None,
        bucket_headers: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
        idempotency_header: str = DEFAULT_IDEMPOTENCY_HEADER,
        cost: Cost | Callable[[PreparedRequest], Cost] = token_cost,
        settle_usage: bool = True,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
        **adapter_options: Any,
    ) -> None:
        super().__init__(**adapter_options)
        check_bucket_headers(bucket_headers or {})
        self.client = client
        self.hosts = dict(hosts or {})
        self.provider = provider
        self.policy: RetryPolicy | str = ONE_ATTEMPT if policy is None else policy
        self.bucket_headers = bucket_headers or {}
        self._header_names = header_names(self.bucket_headers)  # once, not per request
        self.idempotency_header = idempotency_header
        self.cost = cost
        self.settle_usage = settle_usage
        self.rng = rng
        self.sleep = sleep

    def provider_for(self, request: PreparedRequest) -> str | None:
        if self.provider is not None:
            return self.provider
        url = urllib.parse.urlsplit(request.url or "")
        return self.hosts.get(f"{url.hostname}:{url.port}") or self.hosts.get(url.hostname or "")

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        provider = self.provider_for(request)
        if provider is None:
            return super().send(request, *args, **kwargs)
        cost = self.cost(request) if callable(self.cost) else self.cost
        per_bucket = self.bucket_headers.get(provider, {})
        names = self._header_names.get(provider, ())
        permits: list[Permit] = []
        errors: list[BaseException] = []

        def attempt(ctx: AttemptContext) -> Response:
            for name in names:
                request.headers.pop(name, None)
            request.headers.update({**headers_for(provider, per_bucket, ctx.bucket), **ctx.headers})
            permits.append(ctx.permit)
            try:
                return super(RateLimitAdapter, self).send(request, *args, **kwargs)
            except NETWORK_ERRORS as exc:
                errors.append(exc)
                raise

        def describe(response: Response) -> Outcome:
            if self.settle_usage and reads_usage(
                cost, response.status_code, response.headers.get("Content-Type", "")
            ):
                self._report_after_body(response, permits[-1], cost)
                return Outcome(response.status_code, response.headers, report=False)
            reason = None
            if response.status_code >= 400 and "json" in response.headers.get("Content-Type", ""):
                reason = error_reason(response.content)  # read and kept: the caller reads it again
            return Outcome(response.status_code, response.headers, reason)

        try:
            return call_sync(
                self.client,
                provider,
                attempt,
                describe,
                policy=self.policy,
                cost=cost,
                network_errors=NETWORK_ERRORS,
                idempotency_header=self.idempotency_header,
                # A key the caller (an SDK) already set is kept on every attempt.
                idempotency_key=request.headers.get(self.idempotency_header),
                rng=self.rng,
                sleep=self.sleep,
                release=_release,
                wait_for_reports=False,  # the answer is never read here: one round trip less
            )
        except RetriesExhausted as exc:
            if isinstance(exc.last_result, requests.Response):
                return exc.last_result
            if errors:
                raise errors[-1] from exc
            raise

    def _report_after_body(self, response: Response, permit: Permit, cost: Cost) -> None:
        """Report once the body was read, with what its `usage` counted (urllib3 decodes it)."""
        reader = UsageReader(response.headers.get("Content-Type", ""))
        raw = response.raw
        stream = raw.stream
        status, headers = response.status_code, rate_limit_headers(response.headers)
        client = self.client

        def chunks(*args: Any, **kwargs: Any) -> Iterator[bytes]:
            try:
                for chunk in stream(*args, **kwargs):
                    reader.feed(chunk)
                    yield chunk
            finally:
                used = used_units(permit, cost, reader.usage)
                try:
                    try:
                        client.report_for(permit, status, headers=headers, used=used)
                    except BadRequest:
                        if used is None:
                            raise
                        client.report_for(permit, status, headers=headers)
                except (RatelimitdClientError, OSError) as exc:
                    report_failed(exc)

        raw.stream = chunks  # type: ignore[method-assign]  # read through, as requests reads it


def _release(response: Response) -> None:
    response.close()
