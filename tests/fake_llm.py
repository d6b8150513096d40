"""A local fake of the OpenAI and Anthropic HTTP APIs (an aiohttp app), scripted by each test.

Routes: POST /v1/chat/completions, /v1/responses, /v1/embeddings (OpenAI) and /v1/messages
(Anthropic). Each answer carries that API's real rate-limit headers; a 429 carries
`retry-after` and `retry-after-ms` (both SDKs and the daemon read the precise one first).
Answers are taken from `plan` (a FIFO of statuses) or, per API key, from `fail_keys`
(a key that always gets 429); anything else gets 200 with a `usage` of `usage_input` +
`usage_output` tokens. A `"stream": true` body gets server-sent events whose final events
carry the usage. Every request is recorded in `seen`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ("FakeLLM", "Seen")


@dataclass(frozen=True, slots=True)
class Seen:
    path: str
    key: str  # the API key sent (Authorization bearer or x-api-key)
    idempotency_key: str | None
    body: dict[str, Any]


@dataclass(slots=True)
class FakeLLM:
    plan: list[int] = field(default_factory=list)
    fail_keys: set[str] = field(default_factory=set)
    retry_after_ms: int = 20
    usage_input: int = 60
    usage_output: int = 40
    seen: list[Seen] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        for path in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/messages"):
            app.router.add_post(path, self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ") if auth else request.headers.get("x-api-key", "")
        self.seen.append(Seen(request.path, key, request.headers.get("Idempotency-Key"), body))
        anthropic = request.path == "/v1/messages"
        status = self.plan.pop(0) if self.plan else (429 if key in self.fail_keys else 200)
        headers = _anthropic_headers() if anthropic else _openai_headers()
        if status != 200:
            headers |= {"retry-after": "1", "retry-after-ms": str(self.retry_after_ms)}
            error = (
                {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
                if anthropic
                else {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}
            )
            return web.json_response(error, status=status, headers=headers)
        if body.get("stream"):
            return await self._stream(request, headers, anthropic)
        return web.json_response(self._answer(request.path), headers=headers)

    def _answer(self, path: str) -> dict[str, Any]:
        prompt, output = self.usage_input, self.usage_output
        if path == "/v1/messages":
            return {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-test",
                "content": [{"type": "text", "text": "hello"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": output},
            }
        if path == "/v1/embeddings":
            return {
                "object": "list",
                "model": "text-embedding-test",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        if path == "/v1/responses":
            return {
                "id": "resp_1",
                "object": "response",
                "created_at": 0,
                "model": "gpt-test",
                "status": "completed",
                "output": [],
                "parallel_tool_calls": False,
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    "input_tokens": prompt,
                    "output_tokens": output,
                    "total_tokens": prompt + output,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            }
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output},
        }

    async def _stream(
        self, request: web.Request, headers: dict[str, str], anthropic: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in self._events(anthropic):
            name = f"event: {event['type']}\n" if anthropic else ""
            await response.write(f"{name}data: {json.dumps(event)}\n\n".encode())
        if not anthropic:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _events(self, anthropic: bool) -> list[dict[str, Any]]:
        prompt, output = self.usage_input, self.usage_output
        if anthropic:
            message = {**self._answer("/v1/messages"), "content": [], "stop_reason": None}
            message["usage"] = {"input_tokens": prompt, "output_tokens": 1}
            return [
                {"type": "message_start", "message": message},
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello"}},
                {"type": "content_block_stop", "index": 0},
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": output},
                },
                {"type": "message_stop"},
            ]
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-test"}
        return [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hello"}}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {
                **chunk,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": output,
                    "total_tokens": prompt + output,
                },
            },
        ]


def _openai_headers() -> dict[str, str]:
    # platform.openai.com/docs/guides/rate-limits: the headers of every answer.
    return {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-limit-tokens": "800000",
        "x-ratelimit-remaining-tokens": "799900",
        "x-ratelimit-reset-tokens": "7ms",
        "x-request-id": "req_1",
    }


def _anthropic_headers() -> dict[str, str]:
    # docs.anthropic.com/en/api/rate-limits: the headers of every answer.
    return {
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:00Z",
        "anthropic-ratelimit-input-tokens-limit": "400000",
        "anthropic-ratelimit-input-tokens-remaining": "399900",
        "anthropic-ratelimit-input-tokens-reset": "2030-01-01T00:00:00Z",
        "anthropic-ratelimit-output-tokens-limit": "80000",
        "anthropic-ratelimit-output-tokens-remaining": "79960",
        "anthropic-ratelimit-output-tokens-reset": "2030-01-01T00:00:00Z",
        "request-id": "req_1",
    }
