"""The status page at `/` on the HTTP port: one HTML page, its script and its stylesheet.

Shell: serves files shipped inside the package (`ratelimitd/ops/static/`), nothing from a
CDN, so the page works offline. The page itself polls `/v1/status` and redraws in place.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Final

from aiohttp import web

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

__all__ = ("STATIC_FILES", "add_status_page")

# name -> content type; only these are served (no directory listing, no path tricks).
STATIC_FILES: Final = {
    "status.html": "text/html",
    "status.js": "text/javascript",
    "status.css": "text/css",
}


def _read(name: str) -> bytes:
    return resources.files("ratelimitd.ops").joinpath("static", name).read_bytes()


def _file_handler(name: str) -> Handler:
    body = _read(name)  # read once: a few KB, and the package does not change under us
    content_type = STATIC_FILES[name]

    async def handle(request: web.Request) -> web.Response:
        response = web.Response(body=body, content_type=content_type, charset="utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return response

    return handle


def add_status_page(app: web.Application) -> None:
    """`/` (the page) and `/static/status.js`, `/static/status.css`."""
    app.router.add_get("/", _file_handler("status.html"))
    for name in STATIC_FILES:
        if name != "status.html":
            app.router.add_get(f"/static/{name}", _file_handler(name))
