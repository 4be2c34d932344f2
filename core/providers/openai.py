"""OpenAI chat completions through openai.AsyncOpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from openai.lib._pydantic import to_strict_json_schema

from core.models import ProviderType
from core.providers.base import Ask, Image, Reply, Usage
from core.providers.errors import UnexpectedResponse
from core.providers.stainless import StainlessProvider, turn_messages
from core.providers.streaming import StreamState
from core.providers.structured import Schema


class OpenAIProvider(StainlessProvider):
    sdk = openai
    client_class = "AsyncOpenAI"
    provider_type = ProviderType.OPENAI
    known_models = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "o4-mini", "gpt-5-mini")

    async def _reply(self, ask: Ask) -> Reply:
        response = await self.client.chat.completions.create(**self._request(ask))
        try:
            text = response.choices[0].message.content
            return Reply(text=text or "", model_name=response.model, usage=_usage(response.usage))
        except (AttributeError, IndexError, TypeError):
            raise UnexpectedResponse("openai", "the answer had no message or no usage") from None

    async def _stream(self, ask: Ask, state: StreamState) -> AsyncIterator[str]:
        stream = await self.client.chat.completions.create(
            **self._request(ask),
            stream=True,
            stream_options={"include_usage": True},  # a last chunk with the usage
        )
        async with stream:  # leaving early closes the response
            async for chunk in stream:
                state.model_name = chunk.model or state.model_name
                if chunk.usage is not None:
                    state.usage = _usage(chunk.usage)
                if chunk.choices and (text := chunk.choices[0].delta.content):
                    yield text

    def _request(self, ask: Ask) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if ask.system_prompt:
            messages.append({"role": "system", "content": ask.system_prompt})
        messages += turn_messages(ask, _image_url)
        request: dict[str, Any] = {
            "model": self.model_name,
            "messages": messages,
            "max_completion_tokens": ask.max_output_tokens,
        }
        if ask.schema is not None:
            request["response_format"] = _response_format(ask.schema)
        return request

    async def _check_key(self) -> None:
        await self.client.models.list()


def _image_url(image: Image) -> dict[str, Any]:
    return {
        "type": "image_url",
        "image_url": {"url": f"data:{image.mime_type};base64,{image.base64()}"},
    }


def _response_format(schema: Schema) -> dict[str, Any]:
    """Structured Outputs: a model's schema made strict by the SDK's own helper (every
    property required, no others); a caller's dict as given, strict only if it already is."""
    if schema.model is not None:
        body, strict = to_strict_json_schema(schema.model), True
    else:
        body, strict = schema.json, _is_strict(schema.json)
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.name, "schema": body, "strict": strict},
    }


def _is_strict(schema: Any) -> bool:
    """Whether every object in the schema lists all its properties as required and allows no
    others, as strict mode demands (the API refuses strict=True otherwise)."""
    if isinstance(schema, list):
        return all(_is_strict(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or ()) != set(properties):
            return False
    return all(_is_strict(value) for value in schema.values())


def _usage(usage: Any) -> Usage:
    """prompt_tokens includes the cached ones; the details say how many (and the reasoning
    tokens within completion_tokens)."""
    prompt = getattr(usage, "prompt_tokens_details", None)
    completion = getattr(usage, "completion_tokens_details", None)
    return Usage(
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        cached_input_tokens=getattr(prompt, "cached_tokens", None) or 0,
        reasoning_tokens=getattr(completion, "reasoning_tokens", None) or 0,
    )
