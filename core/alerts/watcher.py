"""The alert watcher: every AI_CONSOLE_ALERT_INTERVAL_S it claims the alerts that are due and
sends the deliveries that are due, on a thread of its own, so no provider call ever waits on an
alert. The console runs one per server process; `python -m core alerts watch` runs one on its
own (for deployments where no console runs); `alerts check` does one round (cron). Any number
may run against one database: claims and sends are decided there (core/alerts/checks.py,
courier.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from core.alerts.checks import claim, find_due
from core.alerts.courier import Outcome, deliver_due
from core.alerts.outbox import Outbox
from core.db import session_scope
from core.models import utcnow
from core.periodic import Periodic


@dataclass(frozen=True)
class Round:
    claimed: int  # alerts newly due
    outcomes: list[Outcome]  # deliveries attempted


class AlertWatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        outbox: Outbox,
        interval_s: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._clock = clock
        self._rounds = Periodic("alert-watcher", interval_s, self.run_once)

    def run_once(self) -> Round:
        """Claim what is due now, then send what is due now."""
        now = self._clock()
        with session_scope(self._sessions) as session:  # reads only, most rounds
            due = find_due(session, now)
        claimed = 0
        if due:
            with session_scope(self._sessions, immediate=True) as session:
                claimed = claim(session, due, now)
        return Round(claimed, deliver_due(self._sessions, self._outbox, self._clock))

    def start(self) -> AlertWatcher:
        """Rounds every interval on a thread of its own (core/periodic.py)."""
        self._rounds.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._rounds.stop(timeout)
