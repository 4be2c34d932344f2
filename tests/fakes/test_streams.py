"""The fake provider server's streamed answers, read by each SDK's own streaming API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from tests.fakes import DEFAULT_API_KEYS, DEFAULT_MODELS, FakeProviderServer, count_tokens
from tests.fakes.provider_server import make_reply
from tests.fakes.streams import pieces

KEYS = {provider: min(keys) for provider, keys in DEFAULT_API_KEYS.items()}
MODELS = {provider: models[0] for provider, models in DEFAULT_MODELS.items()}
QUESTION = "Draft two lines of a cover letter for a data engineering role in Berlin."


@dataclass
class Streamed:
    """The pieces an SDK yielded, the usage it reported at the end, and what cut it off."""

    pieces: list[str] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: BaseException | None = None


async def stream_openai(server: FakeProviderServer, out: Streamed, max_tokens: int | None) -> None:
    limit = {"max_completion_tokens": max_tokens} if max_tokens else {}
    async with openai.AsyncOpenAI(
        api_key=KEYS["openai"], base_url=server.openai_base_url, max_retries=0, timeout=10
    ) as client:
        stream = await client.chat.completions.create(
            model=MODELS["openai"],
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
            **limit,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                out.pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                out.input_tokens = chunk.usage.prompt_tokens
                out.output_tokens = chunk.usage.completion_tokens


async def stream_anthropic(
    server: FakeProviderServer, out: Streamed, max_tokens: int | None
) -> None:
    async with (
        anthropic.AsyncAnthropic(
            api_key=KEYS["anthropic"], base_url=server.anthropic_base_url, max_retries=0, timeout=10
        ) as client,
        client.messages.stream(
            model=MODELS["anthropic"],
            max_tokens=max_tokens or 1024,
            messages=[{"role": "user", "content": QUESTION}],
        ) as stream,
    ):
        async for text in stream.text_stream:
            out.pieces.append(text)
        final = await stream.get_final_message()
    out.input_tokens, out.output_tokens = final.usage.input_tokens, final.usage.output_tokens


async def stream_gemini(server: FakeProviderServer, out: Streamed, max_tokens: int | None) -> None:
    options = genai_types.HttpOptions(
        base_url=server.gemini_base_url, api_version="v1beta", timeout=10_000
    )
    client = genai.Client(api_key=KEYS["gemini"], http_options=options).aio
    config = genai_types.GenerateContentConfig(max_output_tokens=max_tokens)
    try:
        stream = await client.models.generate_content_stream(
            model=MODELS["gemini"], contents=[QUESTION], config=config
        )
        async for chunk in stream:
            if chunk.text:
                out.pieces.append(chunk.text)
            if chunk.usage_metadata is not None:
                out.input_tokens = chunk.usage_metadata.prompt_token_count
                out.output_tokens = chunk.usage_metadata.candidates_token_count
    finally:
        await client.aclose()


STREAMERS: dict[
    str, Callable[[FakeProviderServer, Streamed, int | None], Coroutine[Any, Any, None]]
] = {
    "openai": stream_openai,
    "anthropic": stream_anthropic,
    "gemini": stream_gemini,
}
all_providers = pytest.mark.parametrize("provider", list(STREAMERS))
# What each SDK raises when a stream breaks off (Anthropic's and Gemini's let httpx2's through):
# core.providers must map all three mid-stream.
CUT_OFF = {
    "openai": openai.APIConnectionError,
    "anthropic": httpx2.RemoteProtocolError,
    "gemini": httpx2.RemoteProtocolError,
}


def stream(server: FakeProviderServer, provider: str, max_tokens: int | None = None) -> Streamed:
    out = Streamed()

    async def run() -> None:
        try:
            await STREAMERS[provider](server, out, max_tokens)
        except Exception as exc:
            out.error = exc

    asyncio.run(run())
    return out


@all_providers
def test_a_stream_arrives_a_piece_at_a_time_with_the_usage_at_the_end(
    fake_providers: FakeProviderServer, provider: str
) -> None:
    out = stream(fake_providers, provider)
    reply = make_reply(QUESTION)
    assert out.error is None
    assert out.pieces == pieces(reply) and len(out.pieces) > 3
    assert (out.input_tokens, out.output_tokens) == (
        count_tokens([QUESTION]),
        count_tokens([reply]),
    )
    sent = fake_providers.last_request(provider)
    assert sent.path.endswith(":streamGenerateContent") or sent.body["stream"] is True


@all_providers
def test_a_stream_cut_to_max_tokens_reports_the_shorter_answer(
    fake_providers: FakeProviderServer, provider: str
) -> None:
    out = stream(fake_providers, provider, max_tokens=3)
    assert "".join(out.pieces) == make_reply(QUESTION, 3)
    assert out.output_tokens == 3


@all_providers
def test_a_cut_stream_yields_its_first_pieces_then_the_sdk_raises(
    fake_providers: FakeProviderServer, provider: str
) -> None:
    fake_providers.fail_next(provider, mode="cut", pieces=2)
    out = stream(fake_providers, provider)
    assert out.pieces == pieces(make_reply(QUESTION))[:2]
    assert isinstance(out.error, CUT_OFF[provider]) and out.output_tokens is None
    assert stream(fake_providers, provider).error is None  # the fault was for one request


def test_a_cut_blocking_answer_is_an_incomplete_body(fake_providers: FakeProviderServer) -> None:
    fake_providers.fail_next("openai", mode="cut")

    async def call() -> None:
        async with openai.AsyncOpenAI(
            api_key=KEYS["openai"], base_url=fake_providers.openai_base_url, max_retries=0
        ) as client:
            await client.chat.completions.create(
                model=MODELS["openai"], messages=[{"role": "user", "content": QUESTION}]
            )

    with pytest.raises(openai.APIConnectionError):
        asyncio.run(call())
