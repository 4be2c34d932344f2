"""OpenAI chat completions through openai.AsyncOpenAI."""

from __future__ import annotations

import base64
from typing import Any

import httpx2
import openai

from core.models import ProviderType
from core.providers.base import AIProvider, Image, Reply, Usage
from core.providers.errors import ProviderError, UnexpectedResponse
from core.providers.stainless import map_stainless_error, stainless_client


class OpenAIProvider(AIProvider):
    provider_type = ProviderType.OPENAI
    known_models = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "o4-mini", "gpt-5-mini")

    @staticmethod
    def build_client(
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        max_retries: int,
        http_client: httpx2.AsyncClient,
    ) -> openai.AsyncOpenAI:
        return stainless_client(
            openai.AsyncOpenAI, api_key, base_url, timeout_s, max_retries, http_client
        )

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

    async def _check_model(self) -> None:
        await self.client.models.retrieve(self.model_name)

    async def _check_key(self) -> None:
        await self.client.models.list()

    def _map_error(self, exc: Exception) -> ProviderError:
        return map_stainless_error("openai", exc, openai, [self._secret])
