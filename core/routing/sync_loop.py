"""The router's own event loop, on a thread of its own, for synchronous callers
(generate_sync, stream_sync, explain): started on first use, stopped by aclose()."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class SyncLoop:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, step: Awaitable[T]) -> T:
        """Run `step` on the loop's thread and wait for what it returns or raises."""
        return asyncio.run_coroutine_threadsafe(_awaited(step), self._started()).result()

    def stop(self, closing: Callable[[], Awaitable[None]]) -> None:
        """Run `closing` on the loop (what belongs to it), then stop it; no-op if not started."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(_awaited(closing()), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="router-sync", daemon=True).start()
                self._loop = loop
            return self._loop


def refuse_inside_a_loop(name: str, instead: str) -> None:
    """The sync forms would block (or deadlock) a running event loop: say what to use."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name}() inside an event loop: use `{instead}`")


async def _awaited(step: Awaitable[T]) -> T:
    return await step
