"""Read the token usage out of a response body as it passes through, without holding it back.

Pure: no I/O. A JSON answer is kept (up to `MAX_JSON_BYTES`) and decoded at the end; a
server-sent event stream is scanned line by line and only events that mention `usage`
are decoded (the final event of an OpenAI stream, Anthropic's `message_start` and
`message_delta`). gzip and deflate bodies are decompressed on the side; other encodings
give no usage (the estimate then stands).
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Final

import orjson

from ratelimitd.integrations.tokens import TokenUsage

__all__ = ("MAX_JSON_BYTES", "UsageReader")

#: A JSON answer larger than this is passed on without looking for its usage.
MAX_JSON_BYTES: Final = 4 * 1024 * 1024
_MAX_LINE_BYTES: Final = 1024 * 1024  # one SSE line (a stream's event) kept at most


class UsageReader:
    """Fed the raw chunks of one body; `usage` says what it counted."""

    __slots__ = ("_buffer", "_decoder", "_failed", "_sse", "_usage")

    def __init__(self, content_type: str, content_encoding: str = "") -> None:
        self._sse = content_type.startswith("text/event-stream")
        encoding = content_encoding.strip().lower()
        self._decoder: zlib._Decompress | None = None
        self._failed = encoding not in ("", "identity", "gzip", "x-gzip", "deflate")
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or raw headers
        self._buffer = bytearray()
        self._usage = TokenUsage()

    @staticmethod
    def wanted(content_type: str) -> bool:
        """Whether a body of this type may carry a usage worth reading."""
        kind = content_type.split(";", 1)[0].strip().lower()
        return kind == "application/json" or kind == "text/event-stream"

    def feed(self, chunk: bytes) -> None:
        if self._failed or not chunk:
            return
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk)
            except zlib.error:
                self._failed = True
                return
        buffer = self._buffer
        buffer += chunk
        if not self._sse:
            if len(buffer) > MAX_JSON_BYTES:
                self._failed = True
                buffer.clear()
            return
        while (end := buffer.find(b"\n")) >= 0:
            self._line(bytes(buffer[:end]))
            del buffer[: end + 1]
        if len(buffer) > _MAX_LINE_BYTES:
            self._failed = True

    def _line(self, line: bytes) -> None:
        if line.startswith(b"data:") and b'"usage"' in line:
            with contextlib.suppress(orjson.JSONDecodeError):  # not every event is JSON
                self._usage.feed(orjson.loads(line[5:]))

    @property
    def tokens(self) -> float | None:
        """Input plus output tokens, once the whole body was fed (None: unknown)."""
        return self.usage.tokens

    @property
    def usage(self) -> TokenUsage:
        """What the body's `usage` said, once it was all fed (empty when unknown)."""
        if self._failed:
            return TokenUsage()
        if self._sse:
            if self._buffer:
                self._line(bytes(self._buffer))
                self._buffer.clear()
        elif self._buffer:
            try:
                self._usage.feed(orjson.loads(self._buffer))
            except orjson.JSONDecodeError:
                self._failed = True
                return TokenUsage()
            self._buffer.clear()
        return self._usage
