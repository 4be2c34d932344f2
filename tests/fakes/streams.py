"""The fake provider server's streamed answers: each provider's server-sent events, as its SDK's
streaming API reads them.

- OpenAI Chat Completions (`"stream": true`): `data: {chat.completion.chunk}` lines, a role
  chunk first, one chunk per piece, a finish chunk, with `stream_options.include_usage` a last
  chunk with no choices and the usage, then `data: [DONE]`.
- Anthropic Messages (`"stream": true`): `message_start` (input tokens), `content_block_start`,
  a `ping`, one `content_block_delta` per piece, `content_block_stop`, `message_delta` (stop
  reason and output tokens) and `message_stop`.
- Gemini (`:streamGenerateContent?alt=sse`): one `data: {GenerateContentResponse}` per piece,
  each with the prompt's token count, the last with the finish reason and the full usage.

Each event is returned with whether it carries a piece of text, so a fault can cut the stream
after a given number of pieces.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.provider_server import Completion

Event = tuple[bytes, bool]  # the SSE bytes, and whether they carry a piece of the text


def pieces(text: str) -> list[str]:
    """The text as the fake model streams it: a word at a time, each with its trailing space."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


def openai_usage(done: Completion) -> dict[str, Any]:
    """prompt_tokens counts the cached ones too; prompt_tokens_details says how many."""
    return {
        "prompt_tokens": done.input_tokens,
        "completion_tokens": done.output_tokens,
        "total_tokens": done.input_tokens + done.output_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": done.reasoning_tokens,
            "audio_tokens": 0,
        },
    }


def anthropic_usage(done: Completion, output_tokens: int) -> dict[str, Any]:
    """input_tokens are those after the cache; cache reads and writes are counted apart."""
    return {
        "input_tokens": done.input_tokens - done.cached_tokens - done.cache_write_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": done.cache_write_tokens,
        "cache_read_input_tokens": done.cached_tokens,
    }


def gemini_usage(done: Completion, final: bool) -> dict[str, Any]:
    """promptTokenCount counts the cached ones too; cachedContentTokenCount says how many.
    Thinking is counted apart from the answer (thoughtsTokenCount)."""
    usage: dict[str, Any] = {"promptTokenCount": done.input_tokens}
    if done.cached_tokens:
        usage["cachedContentTokenCount"] = done.cached_tokens
    if final:
        usage |= {
            "candidatesTokenCount": done.output_tokens - done.reasoning_tokens,
            "totalTokenCount": done.input_tokens + done.output_tokens,
        }
        if done.reasoning_tokens:
            usage["thoughtsTokenCount"] = done.reasoning_tokens
    return usage


def openai_events(done: Completion, include_usage: bool) -> list[Event]:
    base = {
        "id": f"chatcmpl-fake{done.serial:06d}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": done.model,
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse(base | {"choices": [choice]})

    events: list[Event] = [(chunk({"role": "assistant", "content": "", "refusal": None}), False)]
    events += [(chunk({"content": piece}), True) for piece in pieces(done.text)]
    events.append((chunk({}, "length" if done.truncated else "stop"), False))
    if include_usage:
        events.append((_sse(base | {"choices": [], "usage": openai_usage(done)}), False))
    events.append((_sse("[DONE]"), False))
    return events


def anthropic_events(done: Completion) -> list[Event]:
    message = {
        "id": f"msg_fake{done.serial:06d}",
        "type": "message",
        "role": "assistant",
        "model": done.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": anthropic_usage(done, 1),
    }
    events: list[Event] = [
        (_sse({"type": "message_start", "message": message}, "message_start"), False),
        (
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            False,
        ),
        (_sse({"type": "ping"}, "ping"), False),
    ]
    for piece in pieces(done.text):
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        events.append((_sse(delta, "content_block_delta"), True))
    stop = {"stop_reason": "max_tokens" if done.truncated else "end_turn", "stop_sequence": None}
    events += [
        (_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False),
        (
            _sse(
                {
                    "type": "message_delta",
                    "delta": stop,
                    "usage": {"output_tokens": done.output_tokens},
                },
                "message_delta",
            ),
            False,
        ),
        (_sse({"type": "message_stop"}, "message_stop"), False),
    ]
    return events


def gemini_events(done: Completion) -> list[Event]:
    parts = pieces(done.text)
    events: list[Event] = []
    for n, piece in enumerate(parts, start=1):
        last = n == len(parts)
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": piece}]},
            "index": 0,
        }
        if last:
            candidate["finishReason"] = "MAX_TOKENS" if done.truncated else "STOP"
        response = {
            "candidates": [candidate],
            "usageMetadata": gemini_usage(done, final=last),
            "modelVersion": done.model,
            "responseId": f"fake{done.serial:06d}",
        }
        events.append((_sse(response), True))
    return events
