"""Anthropic Claude messages through anthropic.AsyncAnthropic."""

from __future__ import annotations

import base64
from typing import Any

import anthropic

from core.models import ProviderType
from core.providers.base import Image, Reply, Usage
from core.providers.errors import UnexpectedResponse
from core.providers.stainless import StainlessProvider


class ClaudeProvider(StainlessProvider):
    sdk = anthropic
    client_class = "AsyncAnthropic"
    provider_type = ProviderType.CLAUDE
    max_image_bytes = 5 * 1024 * 1024  # the Messages API's limit per image
    known_models = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1")

    async def _reply(
        self, prompt: str, system_prompt: str | None, image: Image | None, max_output_tokens: int
    ) -> Reply:
        content: list[dict[str, Any]] = []
        if image is not None:
            data = base64.b64encode(image.data).decode("ascii")
            source = {"type": "base64", "media_type": image.mime_type, "data": data}
            content.append({"type": "image", "source": source})
        content.append({"type": "text", "text": prompt})
        extra: dict[str, Any] = {"system": system_prompt} if system_prompt else {}
        response = await self.client.messages.create(
            model=self.model_name,
            max_tokens=max_output_tokens,
            messages=[{"role": "user", "content": content}],
            **extra,
        )
        try:
            text = "".join(block.text for block in response.content if block.type == "text")
            usage = response.usage
            # Prompt-cache reads and writes are input too (and billed as such).
            input_tokens = (
                usage.input_tokens
                + (getattr(usage, "cache_creation_input_tokens", None) or 0)
                + (getattr(usage, "cache_read_input_tokens", None) or 0)
            )
            return Reply(
                text=text,
                model_name=response.model,
                usage=Usage(input_tokens, usage.output_tokens, input_tokens + usage.output_tokens),
            )
        except (AttributeError, TypeError):
            raise UnexpectedResponse("claude", "the answer had no content or no usage") from None

    async def _check_key(self) -> None:
        await self.client.models.list(limit=1)
