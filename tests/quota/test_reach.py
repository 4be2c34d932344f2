"""quota/reach.py: a statement whose caller stopped waiting is still seen to the end."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import create_engine

from core.config import DbTimeouts
from core.quota.reach import DatabaseReach


def test_a_row_that_comes_after_its_caller_was_cancelled_is_handed_to_late() -> None:
    """A reservation the server grants after its caller was cancelled must reach `late`
    (which releases the hold) instead of being dropped with the task."""
    reach = DatabaseReach(create_engine("sqlite://"), DbTimeouts(connect_s=60, statement_s=60))
    answer = asyncio.Event()
    handled: list[Any] = []

    async def statement() -> tuple[int]:
        await answer.wait()  # the frozen server
        return (7,)

    async def late(task: asyncio.Future[Any]) -> None:
        handled.append(await task)

    async def scenario() -> None:
        caller = asyncio.create_task(reach._bounded(statement(), late))
        await asyncio.sleep(0)  # the caller is waiting on the statement
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        answer.set()  # the server answers after all
        await asyncio.wait(reach._late, timeout=60)

    asyncio.run(scenario())
    assert handled == [(7,)]
