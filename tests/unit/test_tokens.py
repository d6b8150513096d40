"""Token estimates of request bodies and the usage read from answers (pure: no I/O)."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from ratelimitd.integrations.tokens import (
    DEFAULT_OUTPUT_TOKENS,
    estimate_anthropic_messages,
    estimate_body,
    estimate_openai_chat,
    estimate_openai_embeddings,
    estimate_openai_responses,
    estimate_text,
    usage_of,
)
from ratelimitd.integrations.usage_stream import UsageReader


def test_estimate_text_counts_words_numbers_and_punctuation() -> None:
    assert estimate_text("") == 0
    assert estimate_text("Hello world") == 2
    assert estimate_text("internationalization") == 3  # 20 letters: 3 pieces of up to 8
    assert estimate_text("12345") == 2  # digits go in groups of 3
    assert estimate_text("a, b.") == 4
    assert estimate_text("日本語") == 3  # ~1.3 CJK characters a token, rounded up


def test_chat_adds_the_output_limit_times_n() -> None:
    body = {"messages": [{"role": "user", "content": "Hello world"}], "max_completion_tokens": 50, "n": 2}
    assert estimate_openai_chat(body) == (3 + 4 + 2, 100)
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello world"}]}]}
    assert estimate_openai_chat(body) == (3 + 4 + 2, DEFAULT_OUTPUT_TOKENS)


def test_responses_embeddings_and_messages() -> None:
    assert estimate_openai_responses({"input": "Hello world", "max_output_tokens": 10}) == (3 + 2, 10)
    assert estimate_openai_embeddings({"input": ["Hello world", "Hello"]}) == (3, 0)
    assert estimate_openai_embeddings({"input": [[1, 2, 3]]}) == (3, 0)
    body = {"system": "Be brief", "messages": [{"role": "user", "content": "Hello world"}], "max_tokens": 7}
    assert estimate_anthropic_messages(body) == (3 + 2 + 4 + 2, 7)


def test_estimate_body_picks_the_api_and_its_units_by_path() -> None:
    body = {"messages": [{"role": "user", "content": "Hello world"}], "max_tokens": 7}
    assert estimate_body("/v1/chat/completions", body) == {"tokens": 3 + 4 + 2 + 7}
    assert estimate_body("/v1/messages", body) == {"input_tokens": 3 + 4 + 2, "output_tokens": 7}
    assert estimate_body("/v1/models", body) is None
    assert estimate_body("/v1/chat/completions", ["not", "an", "object"]) is None


def test_usage_of_json_answers() -> None:
    assert usage_of({"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}) == 15
    assert usage_of({"usage": {"input_tokens": 10, "output_tokens": 5}}) == 15
    anthropic = {"usage": {"input_tokens": 10, "cache_creation_input_tokens": 4, "output_tokens": 5}}
    assert usage_of(anthropic) == 19
    assert usage_of({"usage": {"prompt_tokens": 7, "total_tokens": 7}}) == 7  # embeddings
    assert usage_of({"id": "x"}) is None
    assert usage_of({"usage": {"total_tokens": -1}}) is None
    assert usage_of(["usage"]) is None


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"data: {json.dumps(event)}\n\n".encode() for event in events) + b"data: [DONE]\n\n"


def test_a_stream_usage_is_read_across_chunk_boundaries() -> None:
    body = _sse(
        [
            {"type": "message_start", "message": {"usage": {"input_tokens": 30, "output_tokens": 1}}},
            {"type": "content_block_delta", "delta": {"text": "hi"}},
            {"type": "message_delta", "usage": {"output_tokens": 12}},
        ]
    )
    reader = UsageReader("text/event-stream; charset=utf-8")
    for start in range(0, len(body), 7):
        reader.feed(body[start : start + 7])
    assert reader.usage.units() == {"tokens": 42, "input_tokens": 30, "output_tokens": 12}


def test_responses_stream_final_event() -> None:
    event = {"type": "response.completed", "response": {"usage": {"input_tokens": 3, "output_tokens": 4}}}
    reader = UsageReader("text/event-stream")
    reader.feed(_sse([event]))
    assert reader.tokens == 7


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("", bytes), ("gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_a_json_answer_plain_or_compressed(encoding: str, compress: object) -> None:
    body = json.dumps({"usage": {"prompt_tokens": 2, "completion_tokens": 3}}).encode()
    packed = compress(body)  # type: ignore[operator]
    reader = UsageReader("application/json", encoding)
    reader.feed(packed[:5])
    reader.feed(packed[5:])
    assert reader.tokens == 5


def test_unknown_encodings_and_bad_bodies_give_no_usage() -> None:
    reader = UsageReader("application/json", "br")
    reader.feed(b"\x00\x01")
    assert reader.tokens is None
    reader = UsageReader("application/json", "gzip")
    reader.feed(b"not gzip at all")
    assert reader.tokens is None
    reader = UsageReader("application/json")
    reader.feed(b"{not json")
    assert reader.tokens is None
    assert UsageReader.wanted("application/json; charset=utf-8")
    assert not UsageReader.wanted("text/html")
