"""HTTP endpoints for operators: /metrics, /healthz, /readyz and /v1/status (aiohttp).

Shell: binds 127.0.0.1:9464 by default (`[http]` in the config); any address that
is not loopback must be configured explicitly and is logged as a warning, since
the endpoints have no authentication. Start and stop with `async with HttpServer(...)`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING, Any, Protocol, Self

import orjson
from aiohttp import hdrs, web
from prometheus_client.exposition import choose_encoder

from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.protocol import StatusRequest, parse_object
from ratelimitd.core.readiness import Readiness

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from types import TracebackType

    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from ratelimitd.daemon.config import HttpConfig

__all__ = ("DEFAULT_PORT", "HttpServer", "Readiness", "StatusSource", "is_loopback")

logger = logging.getLogger(__name__)

# 9464 is the port OpenTelemetry's Prometheus exporter uses; not taken by a common daemon.
DEFAULT_PORT = 9464


class StatusSource(Protocol):
    """The status op in slices (`ratelimitd.daemon.service.Service.status_slices`)."""

    def status_slices(self, request: StatusRequest, *, with_id: bool = True) -> Iterable[bytes]: ...


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


class HttpServer:
    """The aiohttp app and its listening site; `port` is the bound port once entered.

    :param config: host and port (port 0 picks a free port); `config.metrics`
        false leaves `/metrics` out.
    :param registry: what `/metrics` serves.
    :param readiness: what `/readyz` reports.
    :param status: what `/v1/status` asks.
    """

    def __init__(
        self,
        config: HttpConfig,
        *,
        registry: CollectorRegistry | None,
        readiness: Readiness,
        status: StatusSource,
    ) -> None:
        self.host = config.host
        self.port = config.port
        self._readiness = readiness
        self._status = status
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/v1/status", self._v1_status)
        self._registry = registry
        if config.metrics and registry is not None:
            app.router.add_get("/metrics", self._metrics)
        # Scrapes every few seconds would flood the log: no access log.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def __aenter__(self) -> Self:
        if not is_loopback(self.host):
            logger.warning(
                "http: serving /metrics and /v1/status on %s, which is not loopback; "
                "these endpoints have no authentication",
                self.host,
            )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self.port = int(self._runner.addresses[0][1])
        logger.info("http: serving /metrics /healthz /readyz /v1/status on %s:%d", self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        """The registry in the format the scraper asks for (OpenMetrics or text 0.0.4).

        Like `prometheus_client.aiohttp.make_aiohttp_handler`, except that only the
        collection, which reads the service's live state, runs on the event loop;
        encoding (about 3 µs a sample, 150 ms for 1,000 providers) runs on a
        thread so acquires keep being served during a scrape.
        """
        assert self._registry is not None
        families = list(self._registry.collect())
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        body = await asyncio.to_thread(encoder, _Collected(families))
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

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
