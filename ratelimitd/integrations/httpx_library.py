"""What the httpx transports take from their library: httpx or its fork httpx2.

The two libraries have the same API but separate classes. A transport subclasses its own
library's `BaseTransport`, and the body streams it hands back must be its library's
`SyncByteStream` / `AsyncByteStream` (httpx checks them with isinstance). `Library` names
what is used, so that either module can be passed where one is wanted (mypy checks a
module against a Protocol), and `usage_streams` builds the streams once per library.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

__all__ = (
    "AsyncSender",
    "AsyncStream",
    "Library",
    "SyncSender",
    "SyncStream",
    "UsageStreams",
    "usage_streams",
)


class SyncSender(Protocol):
    """What is used of an inner `BaseTransport` (the request and answer are the library's)."""

    def handle_request(self, request: Any, /) -> Any: ...
    def close(self) -> None: ...


class AsyncSender(Protocol):
    async def handle_async_request(self, request: Any, /) -> Any: ...
    async def aclose(self) -> None: ...


class SyncStream(Protocol):
    """A library's `SyncByteStream`: a body's chunks."""

    def __iter__(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class AsyncStream(Protocol):
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class Library(Protocol):
    """What the transports use of the `httpx` (or `httpx2`) module."""

    @property
    def SyncByteStream(self) -> type[SyncStream]: ...
    @property
    def AsyncByteStream(self) -> type[AsyncStream]: ...
    @property
    def TransportError(self) -> type[Exception]: ...
    @property
    def HTTPTransport(self) -> Callable[[], SyncSender]: ...
    @property
    def AsyncHTTPTransport(self) -> Callable[[], AsyncSender]: ...


class SyncUsageStream:
    """The body as it passes, through the reader of its usage; closing it sends the report."""

    def __init__(self, chunks: Iterator[bytes], inner: SyncStream) -> None:
        self._chunks = chunks
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._inner.close()


class AsyncUsageStream:
    def __init__(self, chunks: AsyncIterator[bytes], inner: AsyncStream) -> None:
        self._chunks = chunks
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._inner.aclose()


class UsageStreams(NamedTuple):
    """A library's stream classes, and the usage streams made subclasses of them."""

    sync_base: type[SyncStream]
    async_base: type[AsyncStream]
    sync: type[SyncUsageStream]
    async_: type[AsyncUsageStream]


def usage_streams(library: Library) -> UsageStreams:
    return _usage_streams(library.SyncByteStream, library.AsyncByteStream)


@functools.cache  # one pair of classes per library, shared by its sync and async transport
def _usage_streams(sync_base: type[SyncStream], async_base: type[AsyncStream]) -> UsageStreams:
    # The library is known only at run time, so its classes are bases here, not in a class statement.
    return UsageStreams(
        sync_base,
        async_base,
        type("SyncUsageStream", (SyncUsageStream, sync_base), {"__module__": __name__}),
        type("AsyncUsageStream", (AsyncUsageStream, async_base), {"__module__": __name__}),
    )
