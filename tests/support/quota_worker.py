"""A separate OS process hammering one config through core.routing (for the quota tests)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any

from core.config import Settings
from core.quota.ledger import QuotaLedger
from core.routing import Router

# Single-letter words: the fake provider counts a token per word, so a call really uses close to
# half of what it reserves (a byte per token), and the limit is reached by usage, not only holds.
PROMPT = " ".join(["a"] * 200)


def patient(settings: Settings) -> Settings:
    """`settings` waiting as long as it takes for the database. These tests count what the
    limits let through; a loaded CI machine may keep a statement waiting on the counter's row
    longer than the 2 s a router waits by default, and a LimitsUnavailable then is the machine's
    speed, not the ledger's arithmetic (the fault tests cover the timeouts)."""
    return dataclasses.replace(settings, db_connect_timeout_s=60, db_statement_timeout_s=60.0)


def stopped_clock() -> float:
    """The leases' clock, stopped: a lease serves its calls until its balance runs low, never
    retired early because a loaded machine left it idle for half a second, so how many calls
    leases serve depends on the arithmetic, not the machine's speed. (A process whose lease was
    refused once then reserves exactly for the rest of the run: the switch, at the same point.)"""
    return 0.0


def hammer(
    settings: Settings,
    calls: int,
    concurrency: int,
    max_output_tokens: int,
    leases: dict[str, int],
) -> dict[str, int]:
    """Make `calls` calls, `concurrency` at a time; count the outcomes by exception type, and
    under "round_trips" the reservations this process made in the database. `leases` holds the
    router's lease_calls and lease_share, and `stream` (true: stream each call)."""
    leases = dict(leases)
    stream = bool(leases.pop("stream", False))
    round_trips = 0
    reserve = QuotaLedger.reserve

    async def counted(self: QuotaLedger, *args: Any, **kwargs: Any) -> Any:
        nonlocal round_trips
        round_trips += 1
        return await reserve(self, *args, **kwargs)

    QuotaLedger.reserve = counted  # type: ignore[method-assign]

    async def main() -> Counter[str]:
        router = Router(
            settings=patient(settings),
            max_retries=0,
            timeout_s=60,
            environ={},
            lease_clock=stopped_clock,
            **leases,
        )
        slots = asyncio.Semaphore(concurrency)

        async def one() -> str:
            async with slots:
                try:
                    if stream:
                        async with router.stream(
                            "extraction", PROMPT, max_output_tokens=max_output_tokens
                        ) as pieces:
                            async for _ in pieces:
                                pass
                    else:
                        await router.generate(
                            "extraction", PROMPT, max_output_tokens=max_output_tokens
                        )
                except Exception as exc:
                    return type(exc).__name__
                return "ok"

        try:
            return Counter(await asyncio.gather(*(one() for _ in range(calls))))
        finally:
            await router.aclose()

    outcomes = dict(asyncio.run(main()))
    return {**outcomes, "round_trips": round_trips}


def call_and_hang(settings: Settings, leases: dict[str, int]) -> None:
    """Make one call against a provider that does not answer; the test kills us mid-call.
    (`settings` is the test's: its data_dir keeps our spool in the test's own directory.)"""
    router = Router(settings=settings, max_retries=0, timeout_s=60, environ={}, **leases)
    router.generate_sync("extraction", PROMPT, max_output_tokens=10)
