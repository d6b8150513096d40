"""The httpx2 transport's added time per call, and the token estimator's error.

1. Transport: calls to a local HTTP server (aiohttp, in its own thread) with a plain
   `httpx2.Client` (the baseline) and with `RateLimitTransport` around the same inner
   transport, against a real `ratelimitd serve` (one provider that never waits), in the
   same run, rounds alternated, best round of each kept. Blocking and asyncio clients.
   Added time per call = transport - plain; the target is <= 10 % of a loopback request.
2. Estimator: chat bodies built from text (this project's docs and source, and Python's
   standard library as held-out text), the estimate of their prompt against OpenAI's
   o200k tokenizer (bpe-openai, data in its wheel) plus OpenAI's documented message
   overhead; mean and mean absolute error, 5th and 95th percentiles.

    python -m bench.integrations [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import random
import statistics
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
from aiohttp import web

from bench.throughput import daemon, socket_of
from ratelimitd.client import AsyncClient, Client
from ratelimitd.httpx2 import AsyncRateLimitTransport, RateLimitTransport
from ratelimitd.integrations.tokens import estimate_openai_chat

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("main",)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[server]
log_level = "warning"

[providers.api]
rate = "1000000000/second"
burst = 1000000000
"""


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """A loopback aiohttp server answering a small JSON body, on its own thread and loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "items": list(range(10))})

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/v1/things", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{state['port']}/v1/things"
    finally:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _per_call_sync(http: httpx2.Client, url: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        http.get(url).read()
    return (time.perf_counter() - started) / calls


async def _per_call_async(http: httpx2.AsyncClient, url: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await (await http.get(url)).aread()
    return (time.perf_counter() - started) / calls


def transport_rows(socket: Path, url: str, calls: int, rounds: int) -> list[tuple[str, float, float]]:
    """(mode, plain seconds per call, transport seconds per call), best of `rounds` each."""
    rows = []
    with Client(socket) as client:
        plain_http = httpx2.Client()
        limited_http = httpx2.Client(transport=RateLimitTransport(client, provider="api", cost=1))
        with plain_http, limited_http:
            for http in (plain_http, limited_http):  # warm up connections and the daemon
                _per_call_sync(http, url, 50)
            plain, limited = [], []
            for _ in range(rounds):
                plain.append(_per_call_sync(plain_http, url, calls))
                limited.append(_per_call_sync(limited_http, url, calls))
            rows.append(("blocking", min(plain), min(limited)))

    async def run_async() -> tuple[float, float]:
        async with AsyncClient(socket) as aclient:
            plain_http = httpx2.AsyncClient()
            limited_http = httpx2.AsyncClient(
                transport=AsyncRateLimitTransport(aclient, provider="api", cost=1)
            )
            async with plain_http, limited_http:
                for http in (plain_http, limited_http):
                    await _per_call_async(http, url, 50)
                plain, limited = [], []
                for _ in range(rounds):
                    plain.append(await _per_call_async(plain_http, url, calls))
                    limited.append(await _per_call_async(limited_http, url, calls))
        return min(plain), min(limited)

    rows.append(("asyncio", *asyncio.run(run_async())))
    return rows


def _texts() -> dict[str, str]:
    own = sorted(glob.glob(str(ROOT / "docs" / "*.md")) + glob.glob(str(ROOT / "ratelimitd" / "**" / "*.py")))
    stdlib = sorted(glob.glob(str(Path(sysconfig.get_paths()["stdlib"]) / "*.py")))[:40]
    return {
        "project docs and source": "\n".join(Path(f).read_text("utf-8", "replace") for f in own),
        "Python stdlib (held out)": "\n".join(Path(f).read_text("utf-8", "replace") for f in stdlib),
    }


def estimator_rows(bodies: int, seed: int = 1) -> list[tuple[str, int, float, float, float, float]]:
    """(corpus, bodies, mean error, mean |error|, p5, p95) of the prompt estimate, relative."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its data loader uses old importlib API
        import bpe_openai

        encoding = bpe_openai.get_encoding("o200k_base")
    rows = []
    for name, corpus in _texts().items():
        rng = random.Random(seed)
        errors = []
        for _ in range(bodies):
            messages = []
            for _ in range(rng.choice([1, 2, 4])):
                size = rng.choice([80, 300, 1000, 4000])
                start = rng.randrange(0, len(corpus) - size)
                messages.append({"role": "user", "content": corpus[start : start + size]})
            body = {"model": "gpt-4o", "messages": messages, "max_tokens": 1}
            estimate, _ = estimate_openai_chat(body)
            # OpenAI's cookbook: 3 tokens per message and 3 to prime the reply, beside the text.
            real = 3 + sum(3 + len(encoding.encode(m["content"])) for m in messages)
            errors.append((estimate - real) / real)
        errors.sort()
        k = len(errors) // 20
        rows.append(
            (
                name,
                bodies,
                statistics.mean(errors),
                statistics.mean(abs(e) for e in errors),
                errors[k],
                errors[-k - 1],
            )
        )
    return rows


def main(quick: bool = False) -> int:
    calls, rounds, bodies = (200, 2, 60) if quick else (1000, 5, 300)
    with (
        tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp,
        http_server() as url,
        daemon(Path(tmp), metrics=False, config=CONFIG) as process,
    ):
        rows = transport_rows(socket_of(process), url, calls, rounds)
    print(f"transport: {calls} calls a round, best of {rounds} alternated rounds, loopback HTTP server")
    print(f"{'client':<10} {'plain µs/call':>14} {'transport µs/call':>18} {'added µs':>9} {'added %':>8}")
    for mode, plain, limited in rows:
        added = limited - plain
        cells = f"{plain * 1e6:>14.0f} {limited * 1e6:>18.0f} {added * 1e6:>9.0f}"
        print(f"{mode:<10} {cells} {added / plain:>8.1%}")
    print(f"\nestimator: prompt tokens of {bodies} chat bodies against o200k (+ message overhead)")
    print(f"{'text':<26} {'bodies':>6} {'mean':>7} {'mean |e|':>9} {'p5':>7} {'p95':>7}")
    for name, count, mean, mean_abs, p5, p95 in estimator_rows(bodies):
        print(f"{name:<26} {count:>6} {mean:>+7.1%} {mean_abs:>9.1%} {p5:>+7.1%} {p95:>+7.1%}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.integrations", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls and bodies")
    raise SystemExit(main(parser.parse_args().quick))
