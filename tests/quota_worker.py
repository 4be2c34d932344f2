"""A separate OS process hammering one config through core.routing (for the quota tests)."""

from __future__ import annotations

import asyncio
from collections import Counter

from core.config import Settings
from core.routing import Router

PROMPT = " ".join(["word"] * 20)


def hammer(
    database_url: str, fernet_key: str, calls: int, max_output_tokens: int
) -> dict[str, int]:
    """Make `calls` concurrent calls; count the outcomes by exception type."""

    async def main() -> Counter[str]:
        settings = Settings(database_url=database_url, fernet_keys=(fernet_key,))
        router = Router(settings=settings, max_retries=0, timeout_s=10, environ={})
        try:
            outcomes = await asyncio.gather(
                *(
                    router.generate("extraction", PROMPT, max_output_tokens=max_output_tokens)
                    for _ in range(calls)
                ),
                return_exceptions=True,
            )
        finally:
            await router.aclose()
        return Counter(
            "ok" if not isinstance(o, BaseException) else type(o).__name__ for o in outcomes
        )

    return dict(asyncio.run(main()))


def call_and_hang(database_url: str, fernet_key: str) -> None:
    """Make one call against a provider that does not answer; the test kills us mid-call."""
    settings = Settings(database_url=database_url, fernet_keys=(fernet_key,))
    router = Router(settings=settings, max_retries=0, timeout_s=60, environ={})
    router.generate_sync("extraction", PROMPT, max_output_tokens=10)
