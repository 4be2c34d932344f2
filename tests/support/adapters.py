"""Adapters pointed at the fake provider server, one case per provider (tests/providers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from core.providers import AIProvider, ProviderFactory
from tests.fakes import FakeProviderServer

T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    provider_type: str  # ours
    fake: str  # the fake server's name for it
    model: str
    key: str  # planted: valid on the fake server, must never leak

    def base_url(self, server: FakeProviderServer) -> str:
        return getattr(server, f"{self.fake}_base_url")


CASES = [
    Case("openai", "openai", "gpt-4o-mini", "sk-proj-PLANTEDopenai0123456789"),
    Case("claude", "anthropic", "claude-3-5-haiku-latest", "sk-ant-api03-PLANTEDclaude012345"),
    Case("gemini", "gemini", "gemini-2.5-flash", "AIzaSyPLANTEDgemini0123456789abcd"),
]


def call(
    case: Case,
    server: FakeProviderServer,
    action: Callable[[AIProvider], Awaitable[T]],
    **options: Any,
) -> T:
    """Run `action` on a fresh adapter pointed at the fake server, then close it."""

    async def run() -> T:
        provider = ProviderFactory.create_provider(
            case.provider_type,
            options.pop("api_key", case.key),
            options.pop("model", case.model),
            case.base_url(server),
            **({"max_retries": 0} | options),
        )
        try:
            return await action(provider)
        finally:
            await provider.aclose()

    return asyncio.run(run())
