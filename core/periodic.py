"""Background rounds for long-running processes (the console, `python -m core alerts watch`):
`Periodic` runs a function every so often on a daemon thread of its own, so no request and no
provider call waits on it. A round that fails (the database away, a bug) is logged and the next
one runs as planned."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)

RUNNING: weakref.WeakSet[Periodic] = weakref.WeakSet()  # started and not stopped


class Periodic:
    def __init__(self, name: str, interval_s: float, round: Callable[[], object]) -> None:
        self.name = name
        self._interval_s = interval_s
        self._round = round
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Periodic:
        """Run the first round now, then one every interval; idempotent."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
            RUNNING.add(self)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the round under way, if any (waiting up to `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        RUNNING.discard(self)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except Exception as exc:
                log.warning("%s: this round failed (%s); trying again", self.name, exc)
            self._stop.wait(self._interval_s)
