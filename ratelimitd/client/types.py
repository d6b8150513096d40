"""What the async and sync clients share: result types, request bodies, response checks.

Pure: no I/O. Bodies follow protocol v1 (docs/protocol.md, "Ops"); the
client fills in `id` itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

import orjson

from ratelimitd.client.errors import error_from_response

__all__ = (
    "LOCAL_FALLBACK_BUCKET",
    "Cost",
    "Fallback",
    "Permit",
    "ReportDetails",
    "ReportResult",
    "Status",
    "acquire_body",
    "check_response",
    "encode_line",
    "permit_from_response",
    "providers_from_response",
    "report_body",
    "report_result_from_response",
    "requests_in",
    "reset_body",
    "status_body",
    "without_envelope",
)

Cost = float | Mapping[str, float]
Status = int | Literal["network_error"]
Fallback = Literal["raise", "local"]

#: The bucket name of a permit granted by the client's local fallback limiter.
LOCAL_FALLBACK_BUCKET: Final = "local-fallback"


@dataclass(frozen=True, slots=True)
class Permit:
    """One grant: the daemon's bucket and permit id (None for a local-fallback permit).

    `waited` is the seconds the permit was held back; `rate` the bucket's current
    `requests` rate in permits per second (the fallback rate for a local permit).
    """

    provider: str
    bucket: str
    permit: int | None
    waited: float
    rate: float | None
    #: Units of the cost the provider does not limit (the daemon ignored them; a typo?).
    ignored_units: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        """True when the daemon was unreachable and the client limited locally."""
        return self.bucket == LOCAL_FALLBACK_BUCKET


class ReportDetails(TypedDict, total=False):
    """What a report may add to the status, read from the provider's response."""

    #: The provider's error code from the response body, e.g. `insufficient_quota`.
    reason: str | None
    #: Seconds to wait, when the caller read them itself.
    retry_after: float | None
    #: The raw response headers; the daemon parses `Retry-After` and rate-limit headers.
    headers: Mapping[str, str] | None
    #: What the call really consumed, per unit (e.g. `{"tokens": 812}` from the response's
    #: `usage`): the daemon settles the permit's estimated cost against it.
    used: Mapping[str, float] | None


@dataclass(frozen=True, slots=True)
class ReportResult:
    """The daemon's answer to a report; `action` is `dropped` when the client kept it.

    `settled` is None for a report without `used`, else whether the daemon still
    remembered the permit and settled the difference.
    """

    provider: str
    bucket: str
    rate: float | None
    streak: int
    action: str
    settled: bool | None = None


def encode_line(body: Mapping[str, Any]) -> bytes:
    """One request line, newline included."""
    return orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE)


def _check_cost(cost: Cost) -> dict[str, float] | float:
    if isinstance(cost, Mapping):
        if not cost:
            raise ValueError("cost: an object of units must name at least one unit")
        for unit, amount in cost.items():
            _check_positive(amount, f"cost.{unit}")
        return dict(cost)
    _check_positive(cost, "cost")
    return cost


def _check_positive(value: float, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field}: must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field}: must be a finite number > 0, got {value!r}")


def acquire_body(provider: str, cost: Cost, timeout: float | None, exclude: Iterable[str]) -> dict[str, Any]:
    """The `acquire` request (cost 1 and no exclusions are left to the daemon's defaults)."""
    body: dict[str, Any] = {"op": "acquire", "provider": provider}
    checked = _check_cost(cost)
    if checked != 1:
        body["cost"] = checked
    if timeout is not None:
        if not math.isfinite(timeout) or timeout < 0:
            raise ValueError(f"timeout: must be a finite number >= 0, got {timeout!r}")
        body["timeout"] = timeout
    excluded = list(exclude)
    if excluded:
        body["exclude"] = excluded
    return body


def report_body(
    provider: str,
    status: Status,
    *,
    bucket: str,
    permit: int | None,
    reason: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    used: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The `report` request; absent details are left out."""
    body: dict[str, Any] = {"op": "report", "provider": provider, "bucket": bucket}
    body["status"] = status
    if permit is not None:
        body["permit"] = permit
    if reason is not None:
        body["reason"] = reason
    if retry_after is not None:
        body["retry_after"] = retry_after
    if headers:
        # aiohttp's header names are a str subclass (istr) that orjson refuses as keys.
        body["headers"] = {str(name): str(value) for name, value in headers.items()}
    if used:
        for unit, amount in used.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float):
                raise TypeError(f"used.{unit}: must be a number, got {type(amount).__name__}")
            if not math.isfinite(amount) or amount < 0:
                raise ValueError(f"used.{unit}: must be a finite number >= 0, got {amount!r}")
        body["used"] = dict(used)
    return body


def status_body(provider: str | None) -> dict[str, Any]:
    """The `status` request, of every provider or only `provider`."""
    body: dict[str, Any] = {"op": "status"}
    if provider is not None:
        body["provider"] = provider
    return body


def reset_body(provider: str, bucket: str | None) -> dict[str, Any]:
    """The `reset` request, of a whole provider or only `bucket`."""
    body: dict[str, Any] = {"op": "reset", "provider": provider}
    if bucket is not None:
        body["bucket"] = bucket
    return body


def check_response(response: Any) -> dict[str, Any]:
    """The response when `ok`; raise its typed error otherwise."""
    if not isinstance(response, dict):
        raise TypeError(f"the daemon sent a {type(response).__name__}, not a JSON object")
    if response.get("ok") is True:
        return response
    raise error_from_response(response)


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def permit_from_response(provider: str, response: Mapping[str, Any]) -> Permit:
    """A Permit from a granted `acquire` response (lenient: absent fields get defaults)."""
    permit = response.get("permit")
    ignored = response.get("ignored_units")
    return Permit(
        provider=str(response.get("provider", provider)),
        bucket=str(response.get("bucket", "default")),
        permit=permit if isinstance(permit, int) and not isinstance(permit, bool) else None,
        waited=_float(response.get("waited")) or 0.0,
        rate=_float(response.get("rate")),
        ignored_units=tuple(str(unit) for unit in ignored) if isinstance(ignored, list) else (),
    )


def report_result_from_response(provider: str, bucket: str, response: Mapping[str, Any]) -> ReportResult:
    streak = response.get("streak")
    settled = response.get("settled")
    return ReportResult(
        provider=str(response.get("provider", provider)),
        bucket=str(response.get("bucket", bucket)),
        rate=_float(response.get("rate")),
        streak=streak if isinstance(streak, int) and not isinstance(streak, bool) else 0,
        action=str(response.get("action", "none")),
        settled=settled if isinstance(settled, bool) else None,
    )


def providers_from_response(response: Mapping[str, Any]) -> dict[str, Any]:
    """The `providers` object of a `status` response (empty when absent)."""
    providers = response.get("providers")
    return providers if isinstance(providers, dict) else {}


def without_envelope(response: Mapping[str, Any]) -> dict[str, Any]:
    """A response without its `id` and `ok`: what `hello` and `reset` return to callers."""
    return {k: v for k, v in response.items() if k not in ("id", "ok")}


def requests_in(cost: Cost) -> float:
    """How many `requests` a cost is worth to the local fallback (at least one)."""
    if isinstance(cost, Mapping):
        return max(1.0, float(cost.get("requests", 1.0)))
    return max(1.0, float(cost))
