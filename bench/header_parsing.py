"""Microseconds per `parse_headers` call on the header sets providers send, in one run.

For each set (OpenAI's six headers, Anthropic's six, GitHub's five, Crossref's three, a 429
with Retry-After and OpenAI's six): `parse_headers` (read by the plan compiled for the header names), the
general path it falls back to (`parse_headers_general`, the parser before plans), and two
baselines from the same run: a `dict(headers)` copy and `orjson.loads` of the headers as the
daemon receives them. Remaining counts change from call to call, as they do in real
responses, so no cache sees one value only. Times are this thread's CPU time (best of the
rounds), which other work on a busy machine does not inflate as it does wall time.

    python -m bench.header_parsing [--quick]
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from ratelimitd.core.headers.parse import parse_headers, parse_headers_general

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("SETS", "main", "measure")

NOW: Final = 1_750_000_000.0
MAX_PAUSE: Final = 300.0
# (name, status, headers with `{n}` where a remaining count goes)
SETS: Final = (
    (
        "OpenAI, 6 headers",
        200,
        {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "{n}",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": "19{n}",
            "x-ratelimit-reset-tokens": "30ms",
        },
    ),
    (
        "Anthropic, 6 headers",
        200,
        {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "{n}",
            "anthropic-ratelimit-requests-reset": "2025-06-15T15:07:00Z",
            "anthropic-ratelimit-tokens-limit": "400000",
            "anthropic-ratelimit-tokens-remaining": "39{n}",
            "anthropic-ratelimit-tokens-reset": "2025-06-15T15:07:00Z",
        },
    ),
    (
        "GitHub, 5 headers",
        200,
        {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "{n}",
            "X-RateLimit-Used": "1",
            "X-RateLimit-Reset": "1750003600",
            "X-RateLimit-Resource": "core",
        },
    ),
    (
        "Crossref, 3 headers",
        200,
        {"X-Rate-Limit-Limit": "50", "X-Rate-Limit-Interval": "1s", "X-Rate-Limit-Remaining": "{n}"},
    ),
    (
        "429: Retry-After + OpenAI 6",
        429,
        {
            "retry-after": "20",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "20s",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": "{n}",
            "x-ratelimit-reset-tokens": "1m0s",
        },
    ),
)
VARIANTS: Final = 1_000  # distinct remaining counts per set


def _received(headers: dict[str, str]) -> list[bytes]:
    """The set as the daemon receives it, once per remaining count (each a JSON object)."""
    return [
        orjson.dumps({name: value.replace("{n}", str(5000 - i)) for name, value in headers.items()})
        for i in range(VARIANTS)
    ]


def measure(rounds: int = 5, passes: int = 20) -> dict[str, dict[str, float]]:
    """Set -> contender -> µs per call, best of `rounds`; contenders alternate in each round."""
    out: dict[str, dict[str, float]] = {}
    for name, status, template in SETS:
        lines = _received(template)
        decoded = [orjson.loads(line) for line in lines]

        def planned(headers: dict[str, str], status: int = status) -> object:
            return parse_headers(headers, status=status, now_wall=NOW, max_pause=MAX_PAUSE)

        def general(headers: dict[str, str], status: int = status) -> object:
            return parse_headers_general(headers, status=status, now_wall=NOW, max_pause=MAX_PAUSE)

        contenders: tuple[tuple[str, Callable[[Any], object], list[Any]], ...] = (
            ("parse_headers", planned, decoded),
            ("general path", general, decoded),
            ("dict(headers)", dict, decoded),
            ("orjson.loads", orjson.loads, lines),
        )
        best = dict.fromkeys((label for label, _, _ in contenders), float("inf"))
        for _ in range(rounds):
            for label, call, inputs in contenders:
                start = time.thread_time()
                for _ in range(passes):
                    for item in inputs:
                        call(item)
                best[label] = min(best[label], time.thread_time() - start)
        out[name] = {label: seconds / (passes * len(decoded)) * 1e6 for label, seconds in best.items()}
    return out


def main(quick: bool = False) -> None:
    results = measure(rounds=3 if quick else 7, passes=3 if quick else 20)
    labels = list(next(iter(results.values())))
    print("\n## header parsing: µs per call, same run (general path: the parser without plans)")
    print(f"{'header set':<30}" + "".join(f"{label:>15}" for label in labels) + f"{'speed-up':>10}")
    for name, row in results.items():
        speedup = row["general path"] / row["parse_headers"]
        print(f"{name:<30}" + "".join(f"{row[label]:>15.2f}" for label in labels) + f"{speedup:>9.1f}x")


if __name__ == "__main__":
    main()
