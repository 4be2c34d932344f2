"""OpenAI chat completions through openai.AsyncOpenAI."""

from __future__ import annotations

import base64
from typing import Any

import openai

from core.models import ProviderType
from core.providers.base import Image, Reply, Usage
from core.providers.errors import UnexpectedResponse
from core.providers.stainless import StainlessProvider


class OpenAIProvider(StainlessProvider):
    sdk = openai
    client_class = "AsyncOpenAI"
    provider_type = ProviderType.OPENAI
    known_models = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "o4-mini", "gpt-5-mini")

    async def _reply(
        self, prompt: str, system_prompt: str | None, image: Image | None, max_output_tokens: int
    ) -> Reply:
        messages: list[dict[str, Any]] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        if image is None:  # a plain string: the same request, less for the SDK to walk
            messages.append({"role": "user", "content": prompt})
        else:
            data = base64.b64encode(image.data).decode("ascii")
            url = f"data:{image.mime_type};base64,{data}"
            parts = [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": url}},
            ]
            messages.append({"role": "user", "content": parts})
        response = await self.client.chat.completions.create(
            model=self.model_name, messages=messages, max_completion_tokens=max_output_tokens
        )
        try:
            text = response.choices[0].message.content
            usage = response.usage
            return Reply(
                text=text or "",
                model_name=response.model,
                usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
            )
        except (AttributeError, IndexError, TypeError):
            raise UnexpectedResponse("openai", "the answer had no message or no usage") from None

    async def _check_key(self) -> None:
        await self.client.models.list()
