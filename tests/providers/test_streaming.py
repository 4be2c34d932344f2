"""Each adapter's streamed answer, through its SDK's streaming API, against the fake server."""

from __future__ import annotations

import traceback

import pytest

from core.providers import AIProvider, AuthenticationFailed, BadRequest, ProviderUnavailable
from core.providers.base import Image
from core.providers.streaming import ProviderStream
from tests.fakes import FakeProviderServer, count_tokens, make_reply
from tests.fakes.streams import pieces
from tests.support.adapters import Case, call

PROMPT = "Write the opening of a cover letter for a data engineering role in Berlin."


async def read(stream: ProviderStream) -> list[str]:
    async with stream:
        return [piece async for piece in stream]


def test_pieces_join_to_the_answer_and_the_usage_is_the_providers(
    case: Case, fake_providers: FakeProviderServer
) -> None:
    async def action(provider: AIProvider) -> tuple[list[str], ProviderStream]:
        stream = provider.stream_content(PROMPT, system_prompt="Be brief.")
        return await read(stream), stream

    got, stream = call(case, fake_providers, action)
    answer = make_reply(PROMPT)
    assert got == pieces(answer) and len(got) > 3
    reply = stream.reply
    assert reply.text == answer and reply.model_name.startswith(case.model)
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (
        count_tokens([PROMPT, "Be brief."]),
        count_tokens([answer]),
    )
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens


def test_a_stream_reports_cached_input_tokens_as_a_blocking_call_does(
    case: Case, fake_providers: FakeProviderServer
) -> None:
    fake_providers.cached_tokens = 4
    fake_providers.cache_write_tokens = 3  # reported by Anthropic only
    fake_providers.reasoning_tokens = 2  # reported by OpenAI and Gemini

    async def action(provider: AIProvider) -> ProviderStream:
        stream = provider.stream_content(PROMPT)
        await read(stream)
        return stream

    usage = call(case, fake_providers, action).reply.usage
    assert (usage.input_tokens, usage.output_tokens) == (
        count_tokens([PROMPT]),
        count_tokens([make_reply(PROMPT)]),
    )
    claude = case.fake == "anthropic"
    assert (usage.cached_input_tokens, usage.cache_write_tokens, usage.reasoning_tokens) == (
        (4, 3, 0) if claude else (4, 0, 2)
    )


def test_max_output_tokens_reaches_the_provider(
    case: Case, fake_providers: FakeProviderServer
) -> None:
    async def action(provider: AIProvider) -> ProviderStream:
        stream = provider.stream_content(PROMPT, max_output_tokens=3)
        await read(stream)
        return stream

    reply = call(case, fake_providers, action).reply
    assert reply.text == make_reply(PROMPT, 3) and reply.usage.output_tokens == 3


def test_a_stream_that_breaks_off_raises_unavailable_and_keeps_what_came(
    case: Case, fake_providers: FakeProviderServer
) -> None:
    fake_providers.fail_next(case.fake, mode="cut", pieces=2)

    async def action(provider: AIProvider) -> tuple[list[str], ProviderStream, BaseException]:
        stream = provider.stream_content(PROMPT)
        got: list[str] = []
        with pytest.raises(ProviderUnavailable) as caught:
            async with stream:
                async for piece in stream:
                    got.append(piece)
        return got, stream, caught.value

    got, stream, error = call(case, fake_providers, action)
    assert got == pieces(make_reply(PROMPT))[:2] and stream.text == "".join(got)
    assert "broke off after 2 pieces" in str(error) and not stream.ended
    # No SDK exception rides along (they hold the request, and so the key).
    assert error.__cause__ is None and error.__context__ is None
    assert case.key not in "".join(traceback.format_exception(error))


def test_a_failure_before_the_first_piece_is_the_usual_error_without_the_key(
    case: Case, fake_providers: FakeProviderServer
) -> None:
    """Also when the provider echoes the key back in its 401, as some do."""
    fake_providers.fail_next(case.fake, 401, message=f"Incorrect API key provided: {case.key}")

    async def action(provider: AIProvider) -> tuple[ProviderStream, BaseException]:
        stream = provider.stream_content(PROMPT)
        with pytest.raises(AuthenticationFailed) as caught:
            await read(stream)
        return stream, caught.value

    stream, error = call(case, fake_providers, action)
    assert stream.text == "" and not stream.ended
    assert case.key not in "".join(traceback.format_exception(error)) + repr(error)
    assert error.__cause__ is None and error.__context__ is None


def test_leaving_early_closes_the_stream(case: Case, fake_providers: FakeProviderServer) -> None:
    async def action(provider: AIProvider) -> tuple[str, list[str], list[str]]:
        stream = provider.stream_content(PROMPT)
        async with stream:
            first = await anext(stream)
        after = [piece async for piece in stream]  # closed: nothing more comes
        return first, after, await read(provider.stream_content(PROMPT))

    first, after, next_one = call(case, fake_providers, action)
    assert first == pieces(make_reply(PROMPT))[0] and after == []
    assert next_one == pieces(make_reply(PROMPT))  # the adapter streams on


def test_bad_input_is_refused_before_any_call(
    case: Case, fake_providers: FakeProviderServer
) -> None:
    async def action(provider: AIProvider) -> None:
        with pytest.raises(BadRequest, match="max_output_tokens"):
            provider.stream_content(PROMPT, max_output_tokens=0)
        with pytest.raises(BadRequest, match="image type"):
            provider.stream_content((PROMPT, Image(b"GIF89a", "application/pdf")))
        with pytest.raises(BadRequest, match="accepts at most"):  # in an earlier turn too
            big = Image(b"\0" * (provider.max_image_bytes + 1), "image/png")
            provider.stream_content(PROMPT, history=(("user", (big,)), ("assistant", "ok")))

    call(case, fake_providers, action)
    assert fake_providers.requests == []
