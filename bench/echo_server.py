"""A bare NDJSON echo server: the baseline the daemon's throughput is measured against.

Same transport and framing as ratelimitd (asyncio Protocol on a Unix socket, uvloop
when installed, one orjson decode and one encode per line, answers of one read
written together) and nothing else: each request object comes back with
`"ok": true` added, so the real client accepts it as a grant.

    python -m bench.echo_server --socket PATH
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import cast

import orjson

__all__ = ("EchoProtocol", "main", "serve")

_OPTIONS = orjson.OPT_APPEND_NEWLINE


class EchoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
        *lines, self._rest = data.split(b"\n")
        out: list[bytes] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                out.append(b'{"id":null,"ok":false,"error":"invalid_json","message":"-"}\n')
                continue
            if isinstance(obj, dict):
                obj["ok"] = True
            out.append(orjson.dumps(obj, option=_OPTIONS))
        if out and self._transport is not None:
            self._transport.write(b"".join(out))


async def serve(socket_path: Path) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    server = await loop.create_unix_server(EchoProtocol, str(socket_path), backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__)
    parser.add_argument("--socket", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.socket))
    else:
        uvloop.run(serve(args.socket))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
