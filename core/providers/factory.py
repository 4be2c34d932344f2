"""Build a provider adapter from a provider type, a decrypted key and an optional base URL.

This is the one place SDK clients are created, and each one sends through an egress client
(core.providers.egress): no redirects, no proxies, and only to addresses the policy allows. The
adapter registry names each adapter's module, imported when a config of that type is first
used: a process that calls one provider never loads the other two SDKs (about a second and
35 MB each), and one that only reads configs loads none. A fourth provider is one entry.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

from core.models import ProviderType
from core.providers.base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    AIProvider,
    CredentialCheck,
)
from core.providers.egress import Allowlist, EgressRefused, check_base_url, egress_client

ADAPTERS: dict[ProviderType, str] = {  # module:class, imported on first use
    ProviderType.GEMINI: "core.providers.gemini:GeminiProvider",
    ProviderType.OPENAI: "core.providers.openai:OpenAIProvider",
    ProviderType.CLAUDE: "core.providers.anthropic:ClaudeProvider",
}
VALIDATION_TIMEOUT_S = 20.0


def provider_type_of(value: str | ProviderType) -> ProviderType:
    """The ProviderType for `value`, or a ValueError naming the accepted ones."""
    try:
        return ProviderType(str(value).strip().lower())
    except ValueError:
        accepted = ", ".join(t.value for t in ProviderType)
        raise ValueError(f"unknown provider type {value!r}: use one of {accepted}") from None


def adapter_class(provider_type: str | ProviderType) -> type[AIProvider]:
    """The adapter for a provider type, its SDK imported on first use."""
    module, _, name = ADAPTERS[provider_type_of(provider_type)].partition(":")
    adapter: type[AIProvider] = getattr(importlib.import_module(module), name)
    return adapter


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
        allowlist: Allowlist | None = None,
    ) -> AIProvider:
        """An adapter whose SDK client uses `api_key` (and `base_url` when given).

        Without `http_client` the adapter gets its own egress client (`allowlist`, default
        AI_CONSOLE_BASE_URL_ALLOWLIST), which `aclose()` closes. With one (an egress_client
        shared by many adapters, as core.routing does) the caller owns it, must not `aclose()`
        the adapter, and `allowlist` is unused.
        """
        adapter = adapter_class(provider_type)
        owned = None
        if http_client is None:
            http_client = owned = egress_client(allowlist)
        client = adapter.build_client(
            api_key, base_url or None, timeout_s, max_retries, http_client
        )
        return adapter(client, model_name, secret=api_key, http_client=owned)

    @staticmethod
    async def validate_credentials(
        provider_type: str | ProviderType,
        api_key: str,
        base_url: str | None = None,
        model_name: str | None = None,
        *,
        timeout_s: float = VALIDATION_TIMEOUT_S,
        allowlist: Allowlist | None = None,
    ) -> CredentialCheck:
        """Prove the key works: fetch `model_name` when given, else list the models.

        The result is truthy when the key works; its message says why not otherwise. A base URL
        the egress policy refuses is not contacted at all (the message says why).
        """
        if base_url:
            started = time.perf_counter()
            try:  # getaddrinfo blocks: off the event loop
                await asyncio.to_thread(check_base_url, base_url, allowlist)
            except EgressRefused as refused:
                latency = round((time.perf_counter() - started) * 1000)
                message = f"Not tested, the key was not sent: {refused}"
                return CredentialCheck(False, message, latency)
        provider = ProviderFactory.create_provider(
            provider_type,
            api_key,
            model_name or "",
            base_url,
            timeout_s=timeout_s,
            max_retries=1,
            allowlist=allowlist,
        )
        try:
            if model_name:
                return await provider.validate_credentials()
            return await provider.validate_key()
        finally:
            await provider.aclose()
