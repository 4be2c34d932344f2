"""Anthropic Claude messages through anthropic.AsyncAnthropic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic

from core.models import ProviderType
from core.providers.base import Ask, Image, Reply, Usage
from core.providers.errors import UnexpectedResponse
from core.providers.stainless import StainlessProvider, turn_messages
from core.providers.streaming import StreamState


class ClaudeProvider(StainlessProvider):
    sdk = anthropic
    client_class = "AsyncAnthropic"
    provider_type = ProviderType.CLAUDE
    max_image_bytes = 5 * 1024 * 1024  # the Messages API's limit per image
    image_before_text = True  # as Anthropic's vision guide advises
    known_models = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1")

    async def _reply(self, ask: Ask) -> Reply:
        response = await self.client.messages.create(**self._request(ask))
        try:
            text = "".join(block.text for block in response.content if block.type == "text")
            return Reply(text=text, model_name=response.model, usage=_usage(response.usage))
        except (AttributeError, TypeError):
            raise UnexpectedResponse("claude", "the answer had no content or no usage") from None

    async def _stream(self, ask: Ask, state: StreamState) -> AsyncIterator[str]:
        request = self._request(ask)
        async with self.client.messages.stream(**request) as stream:  # closes when left
            async for event in stream:
                if event.type == "message_start":
                    state.model_name = event.message.model or state.model_name
                    state.input_tokens = _usage(event.message.usage).input_tokens
                elif event.type == "text" and event.text:
                    yield event.text
            final = await stream.get_final_message()
        try:
            state.usage = _usage(final.usage)
        except (AttributeError, TypeError):
            raise UnexpectedResponse("claude", "the stream ended without usage") from None

    def _request(self, ask: Ask) -> dict[str, Any]:
        extra: dict[str, Any] = {"system": ask.system_prompt} if ask.system_prompt else {}
        if ask.schema is not None:
            # Structured outputs (GA in this SDK): the answer is a text block of JSON. The SDK's
            # transform_schema fits the schema to what the API accepts (no extra properties;
            # unsupported constraints move into descriptions); the answer is still checked
            # against the caller's own schema.
            schema = anthropic.transform_schema(ask.schema.model or ask.schema.json)
            extra["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return {
            "model": self.model_name,
            "max_tokens": ask.max_output_tokens,
            "messages": turn_messages(ask, _image_block),
            **extra,
        }

    async def _check_key(self) -> None:
        await self.client.models.list(limit=1)


def _image_block(image: Image) -> dict[str, Any]:
    source = {"type": "base64", "media_type": image.mime_type, "data": image.base64()}
    return {"type": "image", "source": source}


def _usage(usage: Any) -> Usage:
    """The Messages API's usage; prompt-cache reads and writes are input too (billed as such)."""
    written = getattr(usage, "cache_creation_input_tokens", None) or 0
    read = getattr(usage, "cache_read_input_tokens", None) or 0
    input_tokens = usage.input_tokens + written + read
    return Usage(
        input_tokens,
        usage.output_tokens,
        input_tokens + usage.output_tokens,
        cached_input_tokens=read,
        cache_write_tokens=written,
    )
