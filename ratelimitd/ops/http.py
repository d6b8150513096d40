"""HTTP endpoints for operators: /metrics, /healthz, /readyz and /v1/status (aiohttp).

Shell: binds 127.0.0.1:9464 by default (`[http]` in the config); any address that
is not loopback must be configured explicitly and is logged as a warning, since
the endpoints have no authentication. Start and stop with `async with HttpServer(...)`.
Connections are capped (`max_connections`; more get a 503 and are closed) and closed
when idle or slow to send a request (`idle_timeout`), so HTTP clients cannot use up the
file descriptors the Unix socket's clients need.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, cast

import orjson
from aiohttp import hdrs, web
from prometheus_client.exposition import choose_encoder

from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.protocol import StatusRequest, parse_object
from ratelimitd.core.readiness import Readiness
from ratelimitd.ops.status_page import add_status_page

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
    from types import TracebackType

    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from ratelimitd.daemon.config import HttpConfig

__all__ = (
    "DEFAULT_PORT",
    "HttpServer",
    "MetricsBody",
    "Readiness",
    "StatusSource",
    "compresses",
    "is_loopback",
)

logger = logging.getLogger(__name__)

# 9464 is the port OpenTelemetry's Prometheus exporter uses; not taken by a common daemon.
DEFAULT_PORT = 9464
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 41\r\n"
    b"Connection: close\r\n\r\ntoo many connections (http.max_connections)"
)


class MetricsBody(Protocol):
    """Builds a /metrics body for an `Accept` header (`ratelimitd.ops.metrics_scrape.MetricsScrape`)."""

    async def body(self, accept: str) -> tuple[AsyncIterator[bytes], str]: ...


class StatusSource(Protocol):
    """The status op in slices (`ratelimitd.daemon.service.Service.status_slices`)."""

    def status_slices(self, request: StatusRequest, *, with_id: bool = True) -> Iterable[bytes]: ...


def compresses(request: web.Request) -> bool:
    """Gzip a scrape only for a scraper on another host. Over loopback it saves no time and
    costs the daemon's CPU: at 10,000 providers, 40 MB took 290-415 ms gzipped, 70-90 ms not."""
    return request.remote is None or not is_loopback(request.remote)


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _status_fields(query: Mapping[str, str]) -> dict[str, Any]:
    """Query parameters as the status op's fields (numbers and flags from their text)."""
    fields: dict[str, Any] = {"op": "status"}
    for name in ("provider", "after"):
        if name in query:
            fields[name] = query[name]
    if "limit" in query:
        text = query["limit"]
        fields["limit"] = int(text) if text.isdigit() else text  # not a number: a bad_request below
    if "history" in query:
        flag = query["history"].lower()
        fields["history"] = {"true": True, "1": True, "false": False, "0": False}.get(flag, flag)
    return fields


_ERROR_STATUS = {ErrorCode.UNKNOWN_PROVIDER: 404, ErrorCode.BAD_REQUEST: 400}


class _Collected:
    """Metric families collected earlier, replayed to an encoder on another thread."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class _Refused(asyncio.Protocol):
    """A connection over the cap: a 503, then closed once the request is read (at most 1 s).

    Closing with the request still unread would reset the connection and lose the 503.
    """

    _transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast("asyncio.Transport", transport)
        self._transport.write(_BUSY)
        asyncio.get_running_loop().call_later(1.0, self._close)

    def data_received(self, data: bytes) -> None:
        self._close()

    def eof_received(self) -> bool:
        self._close()
        return False

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, counted from accept until it is lost.

    Counted here, not by aiohttp: a burst of connections is accepted (protocols made)
    before any of them reports `connection_made`, and the cap must see them all.
    """

    __slots__ = ("_inner", "_live")

    def __init__(self, inner: asyncio.Protocol, live: set[_Counted]) -> None:
        self._inner = inner
        self._live = live
        live.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class HttpServer:
    """The aiohttp app and its listening site; `port` is the bound port once entered.

    :param config: host and port (port 0 picks a free port); `config.metrics`
        false leaves `/metrics` out.
    :param registry: what `/metrics` serves.
    :param readiness: what `/readyz` reports.
    :param status: what `/v1/status` asks.
    :param on_refused: called for each connection refused over `config.max_connections`.
    """

    def __init__(
        self,
        config: HttpConfig,
        *,
        registry: CollectorRegistry | None,
        readiness: Readiness,
        status: StatusSource,
        on_refused: Callable[[], None] = lambda: None,
        scrape: MetricsBody | None = None,
    ) -> None:
        self.host = config.host
        self.port = config.port
        self.max_connections = config.max_connections
        self._on_refused = on_refused
        self._listener: asyncio.Server | None = None
        self._live: set[_Counted] = set()

        self._readiness = readiness
        self._status = status
        self.scrapes = 0  # /metrics answered (the daemon waits for one when it stops)
        self._scraped_at: list[float] = []  # monotonic times of the last two scrapes
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/v1/status", self._v1_status)
        add_status_page(app)
        self._registry = registry
        self._scrape = scrape
        if config.metrics and registry is not None:
            app.router.add_get("/metrics", self._metrics)
        # Scrapes every few seconds would flood the log: no access log. aiohttp's keep-alive
        # timer also runs before the first request, so it closes silent and slow clients.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=config.idle_timeout
        )

    async def __aenter__(self) -> Self:
        if not is_loopback(self.host):
            logger.warning(
                "http: serving /metrics and /v1/status on %s, which is not loopback; "
                "these endpoints have no authentication",
                self.host,
            )
        await self._runner.setup()
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self._accept, self.host, self.port, reuse_address=True
            )
        except OSError:
            await self._runner.cleanup()
            raise
        self.port = int(self._listener.sockets[0].getsockname()[1])
        logger.info("http: serving /metrics /healthz /readyz /v1/status on %s:%d", self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._listener is not None:
            self._listener.close()
        await self._runner.cleanup()

    def _accept(self) -> asyncio.BaseProtocol:
        """aiohttp's handler for a new connection, or a 503 once `max_connections` are open."""
        handlers = self._runner.server
        assert handlers is not None
        if len(self._live) < self.max_connections:
            return _Counted(handlers(), self._live)
        self._on_refused()
        logger.warning(
            "http: refusing a connection: max_connections (%d) reached",
            self.max_connections,
            extra={"event": "connection_refused", "reason": "http_max_connections"},
        )
        return _Refused()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """The registry in the format the scraper asks for (OpenMetrics or text 0.0.4).

        Like `prometheus_client.aiohttp.make_aiohttp_handler`, except that only the
        collection, which reads the service's live state, runs on the event loop;
        encoding (about 3 µs a sample, 150 ms for 1,000 providers) runs on a
        thread so acquires keep being served during a scrape.
        """
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        self.scrapes += 1
        self._scraped_at = [*self._scraped_at[-1:], time.monotonic()]
        if self._scrape is not None:
            # The daemon's: built in slices and written piece by piece (metrics_scrape.py),
            # so a scrape of thousands of providers never holds the loop for long.
            pieces, content_type = await self._scrape.body(accept)
            stream = web.StreamResponse(headers={hdrs.CONTENT_TYPE: content_type})
            if compresses(request):
                stream.enable_compression()
            await stream.prepare(request)
            async for piece in pieces:
                await stream.write(piece)
                await asyncio.sleep(0)
            await stream.write_eof()
            return stream
        assert self._registry is not None
        families = list(self._registry.collect())
        encoder, content_type = choose_encoder(accept)
        body = await asyncio.to_thread(encoder, _Collected(families))
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        if compresses(request):
            response.enable_compression()
        return response

    def scrape_interval(self) -> float | None:
        """The interval of regular scrapes, or None when nothing scraped twice lately."""
        now = time.monotonic()
        if len(self._scraped_at) < 2:
            return None
        previous, last = self._scraped_at
        interval = last - previous
        return interval if now - last <= 2 * interval + 1.0 else None

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._readiness.ready:
            return _json({"ready": True})
        return _json({"ready": False, "reasons": self._readiness.reasons()}, status=503)

    async def _v1_status(self, request: web.Request) -> web.StreamResponse:
        """The status op; `provider`, `limit`, `after` and `history` as query parameters."""
        try:
            status = parse_object(_status_fields(request.query), max_timeout=0.0)
            assert isinstance(status, StatusRequest)
            pieces = self._status.status_slices(status, with_id=False)
        except RatelimitdError as exc:
            error = {"ok": False, "error": exc.code.value, "message": exc.message, **exc.fields}
            return _json(error, status=_ERROR_STATUS.get(exc.code, 500))
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/json"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)  # waits while the client is slow to read
            await asyncio.sleep(0)  # many providers: let acquires run between slices
        await response.write_eof()
        return response
