"""Token estimates of LLM request bodies, and the tokens an answer says it used.

Pure: no I/O. The estimate is a heuristic (no tokenizer, no model files): a token per
word piece of up to `_WORD_CHARS` letters or digits, per punctuation mark, per run of
non-ASCII text counted by characters, plus a few tokens per message. Its error on a sample
of bodies is in docs/integrations.md (measured by `make bench` against OpenAI's o200k
tokenizer). What a call really used comes back in the answer's `usage` and is settled
with the daemon (protocol.md, `report.used`), so the estimate only has to be close enough
for the first grant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = (
    "TOKEN_UNITS",
    "Estimate",
    "TokenUsage",
    "estimate_anthropic_messages",
    "estimate_body",
    "estimate_openai_chat",
    "estimate_openai_embeddings",
    "estimate_openai_responses",
    "estimate_text",
    "usage_of",
)

# Tokenizers of current LLMs (OpenAI o200k, measured) give an English word of up to ~8 letters,
# with its leading space, one token, split digits in groups of up to 3, merge runs of
# punctuation by about 3, and take ~3.5 letters of other alphabets or ~1.3 CJK characters
# per token. Newlines often merge with what follows.
_PIECES = re.compile(r"[^\W\d_]+|[0-9]{1,3}|[^\w\s]+|\n")
_ASCII_WORD: Final = 8.0
_OTHER_WORD: Final = 3.5
_CJK_PER_TOKEN: Final = 1.3
_PUNCTUATION_RUN: Final = 3.0
_NEWLINE: Final = 0.5
_PER_MESSAGE: Final = 4  # role and separators around each message
_PER_REQUEST: Final = 3  # the reply's priming
#: Output tokens assumed when a body sets no limit: a short answer.
DEFAULT_OUTPUT_TOKENS: Final = 256


def estimate_text(text: str) -> int:
    """About how many tokens `text` is for a current LLM tokenizer (error: docs/integrations.md)."""
    tokens = 0.0
    for piece in _PIECES.findall(text):
        first = piece[0]
        if first.isalpha():
            if piece.isascii():
                tokens += math.ceil(len(piece) / _ASCII_WORD)
            elif first >= "\u3000":  # CJK, kana, hangul: no spaces between words
                tokens += len(piece) / _CJK_PER_TOKEN
            else:
                tokens += math.ceil(len(piece) / _OTHER_WORD)
        elif first == "\n":
            tokens += _NEWLINE
        elif first.isdigit():
            tokens += 1
        else:
            tokens += math.ceil(len(piece) / _PUNCTUATION_RUN)
    return math.ceil(tokens)


def _content_tokens(content: Any) -> int:
    """Text anywhere in a message's content: a string, or parts with `text` (images not counted)."""
    if isinstance(content, str):
        return estimate_text(content)
    if isinstance(content, list):
        return sum(_content_tokens(part) for part in content)
    if isinstance(content, Mapping):
        total = sum(_content_tokens(content.get(key)) for key in ("text", "content", "arguments", "thinking"))
        tool_input = content.get("input")  # a tool call's arguments, as JSON
        if isinstance(tool_input, Mapping):
            total += estimate_text(str(tool_input))
        return total
    return 0


def _messages_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        total += _PER_MESSAGE
        if isinstance(message, Mapping):
            total += _content_tokens(message.get("content"))
            for call in message.get("tool_calls") or ():
                if isinstance(call, Mapping):
                    function = call.get("function")
                    if isinstance(function, Mapping):
                        total += _content_tokens(function.get("arguments"))
    return total


def _output_limit(body: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_OUTPUT_TOKENS


Estimate = tuple[int, int]  # (prompt tokens, output tokens at most)


def estimate_openai_chat(body: Mapping[str, Any]) -> Estimate:
    """A chat completions body: its messages; `max_completion_tokens` (or `max_tokens`) × `n`."""
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    output = _output_limit(body, "max_completion_tokens", "max_tokens")
    return _PER_REQUEST + _messages_tokens(body.get("messages")), output * choices


def estimate_openai_responses(body: Mapping[str, Any]) -> Estimate:
    """A responses body: `instructions` and `input` (text or items); `max_output_tokens`."""
    prompt = _content_tokens(body.get("instructions"))
    items = body.get("input")
    prompt += estimate_text(items) if isinstance(items, str) else _messages_tokens(items)
    return _PER_REQUEST + prompt, _output_limit(body, "max_output_tokens")


def estimate_openai_embeddings(body: Mapping[str, Any]) -> Estimate:
    """An embeddings body: its `input` (a string or a list of them; token arrays counted as is)."""
    return _embedding_input(body.get("input")), 0


def _embedding_input(value: Any) -> int:
    if isinstance(value, str):
        return max(1, estimate_text(value))
    if isinstance(value, list):
        total = 0
        for item in value:
            if isinstance(item, str):
                total += estimate_text(item)
            elif isinstance(item, int):
                total += 1
            elif isinstance(item, list):
                total += len(item)
        return max(1, total)
    return 1


def estimate_anthropic_messages(body: Mapping[str, Any]) -> Estimate:
    """A messages body: `system`, `messages` and tool definitions; `max_tokens`."""
    prompt = _content_tokens(body.get("system")) + _messages_tokens(body.get("messages"))
    for tool in body.get("tools") or ():
        if isinstance(tool, Mapping):
            prompt += _content_tokens(tool.get("description")) + estimate_text(
                str(tool.get("input_schema", ""))
            )
    return _PER_REQUEST + prompt, _output_limit(body, "max_tokens")


# Which estimator a request path takes (the last path segments of each API), and the units
# its provider counts: OpenAI one `tokens` limit, Anthropic separate input and output limits
# (as the built-in `openai` and `anthropic` profiles name them).
_BY_PATH: Final = (
    ("/chat/completions", estimate_openai_chat, False),
    ("/responses", estimate_openai_responses, False),
    ("/embeddings", estimate_openai_embeddings, False),
    ("/messages", estimate_anthropic_messages, True),
)
#: The units a token cost may name, and so a report's `used`.
TOKEN_UNITS: Final = ("tokens", "input_tokens", "output_tokens")


def estimate_body(path: str, body: Any) -> dict[str, float] | None:
    """The token cost of a decoded JSON request body sent to `path`, or None for other APIs:
    `{"tokens": N}` for OpenAI, `{"input_tokens": I, "output_tokens": O}` for Anthropic."""
    if not isinstance(body, Mapping):
        return None
    for suffix, estimate, split in _BY_PATH:
        if path.endswith(suffix):
            prompt, output = estimate(body)
            if split:
                return {"input_tokens": float(prompt), "output_tokens": float(output)}
            return {"tokens": float(prompt + output)}
    return None


class TokenUsage:
    """The tokens an answer reports in `usage`, gathered from one JSON body or a stream's events.

    OpenAI chat and embeddings send `prompt_tokens` / `completion_tokens` / `total_tokens`,
    the responses API `input_tokens` / `output_tokens` (under `response` in a stream's
    `response.completed` event), Anthropic `input_tokens` (+ cache creation, which counts
    toward its input limit) in `message_start` and a running `output_tokens` in `message_delta`.
    """

    __slots__ = ("input", "output", "total")

    def __init__(self) -> None:
        self.input: float | None = None
        self.output: float | None = None
        self.total: float | None = None

    def feed(self, event: Any) -> None:
        """Take what a decoded answer or stream event says about usage (anything else is ignored)."""
        if not isinstance(event, Mapping):
            return
        for holder in (event, event.get("message"), event.get("response")):
            if isinstance(holder, Mapping):
                usage = holder.get("usage")
                if isinstance(usage, Mapping):
                    self._take(usage)

    def _take(self, usage: Mapping[str, Any]) -> None:
        prompt = _count(usage, "prompt_tokens", "input_tokens")
        if prompt is not None:
            prompt += _count(usage, "cache_creation_input_tokens") or 0.0
            self.input = prompt if self.input is None else max(self.input, prompt)
        output = _count(usage, "completion_tokens", "output_tokens")
        if output is not None:
            self.output = output if self.output is None else max(self.output, output)
        total = _count(usage, "total_tokens")
        if total is not None:
            self.total = total

    def units(self) -> dict[str, float]:
        """What was used in each of `TOKEN_UNITS` the answer told (empty when it said nothing)."""
        used: dict[str, float] = {}
        if (tokens := self.tokens) is not None:
            used["tokens"] = tokens
        if self.input is not None:
            used["input_tokens"] = self.input
        if self.output is not None:
            used["output_tokens"] = self.output
        return used

    @property
    def tokens(self) -> float | None:
        """Input plus output tokens, or None when the answer said nothing about usage."""
        if self.total is not None:
            return self.total
        if self.input is None and self.output is None:
            return None
        return (self.input or 0.0) + (self.output or 0.0)


def _count(usage: Mapping[str, Any], *names: str) -> float | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


def usage_of(answer: Any) -> float | None:
    """The tokens a decoded JSON answer says it used, or None."""
    usage = TokenUsage()
    usage.feed(answer)
    return usage.tokens
