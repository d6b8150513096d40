"""`ratelimitd status` for people: one row per bucket and unit, ages instead of epoch times.

Reads the `status` op's JSON (fetched in pages without history, so a daemon with
thousands of providers answers quickly) and formats it; `--watch` redraws it in place.
Rates use the one format of the project (`core.rates.format_rate`), durations `format_age`.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Final

from ratelimitd.core.rates import format_rate

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.client.sync import Client

__all__ = ("COLUMNS", "fetch_status", "format_age", "format_backend", "format_status", "watch")

COLUMNS: Final = (
    "PROVIDER",
    "BUCKET",
    "UNIT",
    "RATE/BASELINE",
    "SHADOW",
    "STATE",
    "WHY",
    "AVAILABLE",
    "429s",
    "LAST 429",
    "STREAK",
    "GRANTED",
    "TIMEOUTS",
    "WAITERS",
)
_PAGE: Final = 1000  # providers per status request (the most the daemon answers at once)
_CLEAR: Final = "\x1b[H\x1b[2J"  # cursor home, clear screen


def format_age(seconds: float) -> str:
    """A duration for people: `0.4s`, `12s`, `3m05s`, `2h03m`, `4d02h`."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def fetch_status(client: Client, provider: str | None) -> dict[str, Any]:
    """The whole `status` answer (envelope and providers), in pages, without history."""
    if provider is not None:
        return client.request({"op": "status", "provider": provider, "history": False})
    answer: dict[str, Any] = {}
    providers: dict[str, Any] = {}
    after: str | None = None
    while True:
        body: dict[str, Any] = {"op": "status", "history": False, "limit": _PAGE}
        if after is not None:
            body["after"] = after
        page = client.request(body)
        answer = page
        providers.update(page.get("providers") or {})
        after = page.get("next")
        if not isinstance(after, str):
            break
    answer["providers"] = providers
    return answer


def _rate(value: Any, period: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return format_rate(float(value), float(period) if isinstance(period, int | float) else None)


def _ago(at: Any, now: float) -> str:
    return f"{format_age(now - at)} ago" if isinstance(at, int | float) else "-"


def _why(bucket: Mapping[str, Any], now: float) -> str:
    """Why the bucket is as it is: the last learning event's reason and its age, else the
    reason it cannot serve now (selection's code)."""
    events = bucket.get("events") or {}
    reason = events.get("reason")
    if isinstance(reason, str):
        return f"{reason} {_ago(events.get('reason_since'), now)}"
    why = bucket.get("why")
    return why if isinstance(why, str) else "-"


def _available(bucket: Mapping[str, Any]) -> str:
    delay = bucket.get("available_in")
    if isinstance(delay, int | float) and delay > 0:
        return f"in {format_age(delay)}"
    if bucket.get("why") in (None, "rate_limited") or bucket.get("state") == "ok":
        return "now"
    return "-"  # disabled until a reset: no time to give


def _daemon_line(daemon: Any) -> str:
    """What the daemon says about itself, when something is wrong (else empty)."""
    if not isinstance(daemon, dict):
        return ""
    problems = []
    if daemon.get("ready") is False:
        reasons = daemon.get("not_ready") or {}
        problems.append("not ready: " + "; ".join(f"{k}: {v}" for k, v in reasons.items()))
    reload = daemon.get("reload") or {}
    if reload.get("ok") is False:
        problems.append(f"last reload failed, running the previous configuration: {reload.get('error')}")
    return "".join(f"daemon {problem}\n" for problem in problems)


def _amount(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_backend(backend: Any) -> str:
    """One line on the shared backend (absent with the memory backend), then one per bucket's
    lease. The daemon's URL has its secret masked already; nothing else could carry one."""
    if not isinstance(backend, dict):
        return ""
    parts = [f"backend: {backend.get('kind', '?')} {'up' if backend.get('up') is True else 'DOWN'}"]
    if isinstance(backend.get("url"), str):
        parts[0] += f" at {backend['url']}"
    if isinstance(backend.get("host_id"), str):
        parts.append(f"host {backend['host_id']}")
    trips = backend.get("round_trips_per_second")
    if isinstance(trips, int | float):
        parts.append(f"{trips:.1f} round trips/s")
    if isinstance(backend.get("fallbacks"), int) and backend["fallbacks"]:
        parts.append(f"{backend['fallbacks']} fallbacks")
    line = ", ".join(parts)
    if backend.get("up") is not True:
        share = backend.get("fallback_share")
        line += "; limiting locally" + (
            f" at {share:g} of the rate" if isinstance(share, int | float) else ""
        )
        if isinstance(backend.get("reason"), str):
            line += f": {backend['reason']}"
    lines = [line]
    buckets = backend.get("buckets") or {}
    for name in sorted(buckets):
        lease = buckets[name].get("lease") or {}
        held = ", ".join(f"{unit} {_amount(float(v))}" for unit, v in sorted(lease.items())) or "none"
        factor = buckets[name].get("factor")
        factor_text = f", fleet factor {factor:.3g}" if isinstance(factor, int | float) else ""
        lines.append(f"  {name}: lease held {held}{factor_text}")
    return "".join(f"{text}\n" for text in lines)


def format_status(
    providers: Mapping[str, Any], *, now: float | None = None, daemon: Any = None, backend: Any = None
) -> str:
    """A table, one row per provider, bucket and unit; `now` is the wall clock (unix s)."""
    now = time.time() if now is None else now
    rows: list[tuple[str, ...]] = [COLUMNS]
    for name in sorted(providers):
        buckets = providers[name].get("buckets", {}) if isinstance(providers[name], dict) else {}
        for bucket_name, bucket in buckets.items():
            limits = bucket.get("limits") or {"-": {}}
            events = bucket.get("events") or {}
            reports = bucket.get("reports") or {}
            for unit, limit in limits.items():
                period = limit.get("period")
                rate = _rate(limit.get("rate"), period)
                baseline = _rate(limit.get("baseline"), period)
                rows.append(
                    (
                        name,
                        bucket_name,
                        unit,
                        f"{rate} / {baseline}" if rate != baseline else rate,
                        _rate(limit.get("shadow_rate"), period),
                        str(bucket.get("state", "-")),
                        _why(bucket, now),
                        _available(bucket),
                        str(reports.get("429", 0)),
                        _ago(events.get("last_429"), now),
                        str(bucket.get("streak", "-")),
                        str(bucket.get("granted", "-")),
                        str(bucket.get("timeouts", "-")),
                        str(bucket.get("waiters", "-")),
                    )
                )
    head = _daemon_line(daemon) + format_backend(backend)
    if len(rows) == 1:
        return head + "no providers yet\n"
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return head + "\n".join([*(line.rstrip() for line in lines), *_scope_lines(providers)]) + "\n"


def _scope_lines(providers: Mapping[str, Any]) -> list[str]:
    """Buckets whose Retry-After holds only the request, or whose scope is configured: why."""
    lines = []
    for name in sorted(providers):
        buckets = providers[name].get("buckets", {}) if isinstance(providers[name], dict) else {}
        for bucket_name, bucket in buckets.items():
            scope = bucket.get("retry_after_scope") if isinstance(bucket, dict) else None
            if isinstance(scope, dict) and (
                scope.get("scope") == "request" or scope.get("setting") != "auto"
            ):
                lines.append(
                    f"{name}/{bucket_name}: Retry-After holds the {scope.get('scope')}; {scope.get('why')}"
                )
    return lines


def watch(client: Client, provider: str | None, interval: float, frames: int | None = None) -> None:
    """Redraw the table in place every `interval` seconds (until Ctrl-C, or `frames` frames)."""
    drawn = 0
    while frames is None or drawn < frames:
        answer = fetch_status(client, provider)
        stamp = time.strftime("%H:%M:%S")
        table = format_status(
            answer.get("providers") or {}, daemon=answer.get("daemon"), backend=answer.get("backend")
        )
        sys.stdout.write(
            f"{_CLEAR}ratelimitd status at {stamp} (every {interval:g} s; Ctrl-C stops)\n{table}"
        )
        sys.stdout.flush()
        drawn += 1
        if frames is None or drawn < frames:
            time.sleep(interval)
