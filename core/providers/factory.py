"""Build a provider adapter from a provider type, a decrypted key and an optional base URL.

This is the one place SDK clients are created. The adapter registry is a dict, so a fourth
provider is one import and one entry.
"""

from __future__ import annotations

from typing import Any

from core.models import ProviderType
from core.providers.anthropic import ClaudeProvider
from core.providers.base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    AIProvider,
    CredentialCheck,
)
from core.providers.gemini import GeminiProvider
from core.providers.openai import OpenAIProvider

ADAPTERS: dict[ProviderType, type[AIProvider]] = {
    ProviderType.GEMINI: GeminiProvider,
    ProviderType.OPENAI: OpenAIProvider,
    ProviderType.CLAUDE: ClaudeProvider,
}
VALIDATION_TIMEOUT_S = 20.0


def provider_type_of(value: str | ProviderType) -> ProviderType:
    """The ProviderType for `value`, or a ValueError naming the accepted ones."""
    try:
        return ProviderType(str(value).strip().lower())
    except ValueError:
        accepted = ", ".join(t.value for t in ProviderType)
        raise ValueError(f"unknown provider type {value!r}: use one of {accepted}") from None


class ProviderFactory:
    @staticmethod
    def create_provider(
        provider_type: str | ProviderType,
        api_key: str,
        model_name: str,
        base_url: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: Any = None,
    ) -> AIProvider:
        """An adapter whose SDK client uses `api_key` (and `base_url` when given).

        With `http_client` (an httpx2.AsyncClient) the SDK reuses that connection pool; the
        caller then owns it, and must not `aclose()` the adapter.
        """
        adapter = ADAPTERS[provider_type_of(provider_type)]
        client = adapter.build_client(
            api_key, base_url or None, timeout_s, max_retries, http_client
        )
        return adapter(client, model_name, secret=api_key)

    @staticmethod
    async def validate_credentials(
        provider_type: str | ProviderType,
        api_key: str,
        base_url: str | None = None,
        model_name: str | None = None,
        *,
        timeout_s: float = VALIDATION_TIMEOUT_S,
    ) -> CredentialCheck:
        """Prove the key works: fetch `model_name` when given, else list the models.

        The result is truthy when the key works; its message says why not otherwise.
        """
        provider = ProviderFactory.create_provider(
            provider_type, api_key, model_name or "", base_url, timeout_s=timeout_s, max_retries=1
        )
        try:
            if model_name:
                return await provider.validate_credentials()
            return await provider.validate_key()
        finally:
            await provider.aclose()
