"""A separate OS process that routes calls and reports them answered (for the spool tests)."""

from __future__ import annotations

import asyncio
import threading
from multiprocessing.connection import Connection

from core.config import Settings
from core.routing import Router


def call_then_wait(settings: Settings, calls: int, report: Connection) -> None:
    """Make `calls` calls, send how many returned, then wait to be killed (the test's SIGKILL
    comes while the usage writer still cannot store them)."""

    async def main() -> int:
        router = Router(settings=settings, max_retries=0, timeout_s=10, environ={})
        results = await asyncio.gather(
            *(router.generate("extraction", f"Extract job {n}") for n in range(calls))
        )
        return len(results)

    report.send(asyncio.run(main()))
    threading.Event().wait()
