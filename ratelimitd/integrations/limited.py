"""`limited`: any function or block of code under permits, sync or async.

Shell. As a decorator it acquires a permit before each call, runs the function, and reports
how it went, read from the return value or the exception by a `classify` hook; with a
retry policy it retries and fails over across buckets. As a context manager it acquires
on entry and reports on exit (the exception, if any, goes to `classify`).

    @limited("crossref")
    def fetch(doi: str) -> dict: ...

    async with limited("openai", cost={"requests": 1, "tokens": 900}) as call:
        answer = await client.responses.create(...)
        call.used = {"tokens": answer.usage.total_tokens}
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from ratelimitd.client.async_client import AsyncClient
from ratelimitd.client.retry import RetriesExhausted, RetryPolicy
from ratelimitd.client.retry_calls import Outcome, call_async, call_sync
from ratelimitd.client.sync import Client
from ratelimitd.integrations.httpx_base import ONE_ATTEMPT

if TYPE_CHECKING:
    from types import TracebackType

    from ratelimitd.client.retry_steps import AttemptContext
    from ratelimitd.client.types import Cost, Permit, Status

__all__ = ("Call", "classify_default", "limited")

P = ParamSpec("P")
R = TypeVar("R")
Classify = Callable[[object, "BaseException | None"], "Outcome | Status | None"]


def classify_default(result: object, error: BaseException | None) -> Outcome | Status | None:
    """A returned value is a success (200); an exception reports the HTTP status it carries
    (`.status_code`, `.status`, or its `.response`'s: requests, httpx, aiohttp, the SDKs),
    `network_error` for OSError and TimeoutError, and nothing for any other exception."""
    if error is None:
        return 200
    for holder in (error, getattr(error, "response", None)):
        for name in ("status_code", "status"):
            status = getattr(holder, name, None)
            if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
                return status
    if isinstance(error, OSError | TimeoutError):
        return "network_error"
    return None


def _outcome(value: Outcome | Status | None) -> Outcome | None:
    if value is None or isinstance(value, Outcome):
        return value
    return Outcome(value)


@dataclass(slots=True)
class _Raised:
    """An exception of the wrapped call, carried through the attempt loop to be classified."""

    error: BaseException


class Call:
    """The permit of a `with limited(...)` block; set `used` (or `outcome`) before leaving it."""

    __slots__ = ("outcome", "permit", "used")

    def __init__(self, permit: Permit) -> None:
        self.permit = permit
        #: What the call consumed per unit (settles the permit's cost), e.g. `{"tokens": 812}`.
        self.used: Mapping[str, float] | None = None
        #: How it went, when the block knows better than the default (200, or the exception's).
        self.outcome: Outcome | Status | None = None


_sync_clients: dict[int, Client] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
    weakref.WeakKeyDictionary()
)
_clients_lock = threading.Lock()


def _default_client() -> Client:
    """One blocking client per thread (a `Client` is not shared across threads)."""
    with _clients_lock:
        client = _sync_clients.get(threading.get_ident())
        if client is None:
            client = _sync_clients[threading.get_ident()] = Client()
        return client


def _default_async_client() -> AsyncClient:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = AsyncClient()
    return client


def _block_key() -> tuple[int, int]:
    try:
        task = id(asyncio.current_task())
    except RuntimeError:  # no running loop: a thread's blocking code
        task = 0
    return threading.get_ident(), task


class limited:
    """Run calls to `provider` under permits: a decorator (sync or async) or a context manager.

    :param provider: the provider every call counts against.
    :param cost: the cost of one call (a number of `requests`, or units -> amounts).
    :param client: a `Client` (blocking calls) or `AsyncClient` (coroutines); default one per
        thread or event loop, at the default socket path.
    :param classify: `(result, exception) -> status | Outcome | None` for each call (None:
        report nothing); default `classify_default`.
    :param policy: a `RetryPolicy` or preset name: decorated calls are retried and fail over
        across buckets on the statuses it names; None (default): one attempt.
    """

    def __init__(
        self,
        provider: str,
        *,
        cost: Cost = 1,
        client: Client | AsyncClient | None = None,
        classify: Classify = classify_default,
        policy: RetryPolicy | str | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.provider = provider
        self.cost = cost
        self.client = client
        self.classify = classify
        self.policy: RetryPolicy | str = ONE_ATTEMPT if policy is None else policy
        self.rng = rng
        # Open `with` blocks by thread and task: one `limited` may guard many at once.
        self._calls: dict[tuple[int, int], list[Call]] = {}

    # -- decorator ------------------------------------------------------------------------------

    @overload
    def __call__(self, function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, function: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, function: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async def send(ctx: AttemptContext) -> object:
                    try:
                        return await function(*args, **kwargs)
                    except Exception as exc:  # classified, then raised again
                        return _Raised(exc)

                return self._unwrap(
                    await self._run_async(send),
                )

            return run_async

        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> Any:
            def send(ctx: AttemptContext) -> object:
                try:
                    return function(*args, **kwargs)
                except Exception as exc:
                    return _Raised(exc)

            return self._unwrap(self._run_sync(send))

        return run

    def _describe(self, result: object) -> Outcome:
        error = result.error if isinstance(result, _Raised) else None
        outcome = _outcome(self.classify(None if error else result, error))
        # Nothing to report (an exception that is not the provider's doing) still ends the attempt.
        return outcome if outcome is not None else Outcome(200, report=False)

    def _run_sync(self, send: Callable[[AttemptContext], object]) -> object:
        client = self.client if self.client is not None else _default_client()
        if not isinstance(client, Client):
            raise TypeError("limited: a blocking function needs a blocking ratelimitd Client")
        try:
            return call_sync(
                client,
                self.provider,
                send,
                self._describe,
                policy=self.policy,
                cost=self.cost,
                rng=self.rng,
                sleep=time.sleep,
            )
        except RetriesExhausted as exc:
            if exc.last_result is not None:
                return exc.last_result
            raise

    async def _run_async(self, send: Callable[[AttemptContext], Awaitable[object]]) -> object:
        client = self.client if self.client is not None else _default_async_client()
        if not isinstance(client, AsyncClient):
            raise TypeError("limited: a coroutine function needs an AsyncClient")
        try:
            return await call_async(
                client, self.provider, send, self._describe, policy=self.policy, cost=self.cost, rng=self.rng
            )
        except RetriesExhausted as exc:
            if exc.last_result is not None:
                return exc.last_result
            raise

    @staticmethod
    def _unwrap(result: object) -> Any:
        if isinstance(result, _Raised):
            raise result.error
        return result

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> Call:
        client = self.client if self.client is not None else _default_client()
        if not isinstance(client, Client):
            raise TypeError("limited: `with` needs a blocking ratelimitd Client; use `async with`")
        call = Call(client.acquire(self.provider, self.cost))
        self._calls.setdefault(_block_key(), []).append(call)
        return call

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        call = self._pop_call()
        outcome = self._block_outcome(call, error)
        if outcome is not None:
            client = cast("Client", self.client if self.client is not None else _default_client())
            client.report_for(call.permit, outcome.status, used=call.used)

    async def __aenter__(self) -> Call:
        client = self.client if self.client is not None else _default_async_client()
        if not isinstance(client, AsyncClient):
            raise TypeError("limited: `async with` needs an AsyncClient; use `with`")
        call = Call(await client.acquire(self.provider, self.cost))
        self._calls.setdefault(_block_key(), []).append(call)
        return call

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        call = self._pop_call()
        outcome = self._block_outcome(call, error)
        if outcome is not None:
            client = cast("AsyncClient", self.client if self.client is not None else _default_async_client())
            await client.report_for(call.permit, outcome.status, used=call.used)

    def _pop_call(self) -> Call:
        key = _block_key()
        calls = self._calls[key]
        call = calls.pop()
        if not calls:
            del self._calls[key]
        return call

    def _block_outcome(self, call: Call, error: BaseException | None) -> Outcome | None:
        if call.outcome is not None:
            return _outcome(call.outcome)
        return _outcome(self.classify(None, error if isinstance(error, Exception) else None))
