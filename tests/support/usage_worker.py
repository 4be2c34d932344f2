"""A separate OS process that routes calls and reports them answered (for the spool tests)."""

from __future__ import annotations

import asyncio
import threading
from multiprocessing.connection import Connection

from core.config import Settings
from core.routing import Router


def call_then_wait(settings: Settings, calls: int, report: Connection) -> None:
    """Make `calls` calls, send how many returned (or the first failure, as text, so that the
    test fails at once instead of waiting), then wait to be killed (the test's SIGKILL comes
    while the usage writer still cannot store them)."""

    async def main() -> int:
        router = Router(settings=settings, max_retries=0, timeout_s=10, environ={})
        results = await asyncio.gather(
            *(router.generate("extraction", f"Extract job {n}") for n in range(calls))
        )
        return len(results)

    try:
        report.send(asyncio.run(main()))
    except Exception as exc:  # the parent asserts on the count, and shows this instead
        report.send(repr(exc))  # (a routing error carries no cause: it could hold the key)
    threading.Event().wait()
