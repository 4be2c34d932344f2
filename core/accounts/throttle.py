"""Sign-in throttling.

Throttling, not locking. A hard per-account lock (five wrong passwords lock the account) is a
denial-of-service switch anyone can pull: knowing a username is enough to keep its owner, even
the only super-admin, out for as long as one keeps typing wrong passwords. So failures are
counted in `sign_in_throttles` (in the database: it holds across replicas and restarts) per
username *and client address*, and per client address alone, and they only delay:
- per username + address: ACCOUNT_FREE_FAILURES (4) wrong passwords are free; each further one
  makes that pair wait FIRST_DELAY (1 minute), doubling (2, 4, 8…) up to MAX_DELAY (15 minutes).
  The right password from another address is never kept out by these failures, and the right
  password from this address clears them.
- per address: ADDRESS_FREE_FAILURES (20) wrong passwords for any usernames, then the same
  doubling delays, so one address cannot spray many accounts. A success does not clear it (an
  attacker with one account of their own would otherwise reset their budget at will).
- per account: CODE_FREE_FAILURES (4) wrong TOTP codes (at sign-in or step-up), then the same
  delays, from every address at once: whoever guesses codes already has the password, so
  changing address must not buy more guesses. A right code clears it.
Counts start afresh FAILURE_WINDOW (24 hours) after a window's first failure. The key is the
normalised username as typed (its SHA-256, so a password typed into the name field is not stored
in clear), never the user id: unknown and existing names are counted, delayed and answered
alike, and a throttled attempt runs no bcrypt for either. What bounds a distributed attack (many
addresses on one account): each address's own budget (four free guesses at it, then at most
four an hour: about 100 a day), the bcrypt cost of every guess, passwords that zxcvbn scores 3
or more (at least 10^8 guesses), and for super-admins (and enrolled analysts) a TOTP code on
top, itself throttled per account.

sign_in_throttles holds the failures, window start and delay per scope and key.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core import audit
from core.access import Actor
from core.accounts.rules import Outcome
from core.models import (
    SignInThrottle,
    ThrottleScope,
    utcnow,
)

# Sign-in throttling (the module docstring says why these shapes and numbers).
ACCOUNT_FREE_FAILURES = 4


ADDRESS_FREE_FAILURES = 20


CODE_FREE_FAILURES = 4


FIRST_DELAY = timedelta(minutes=1)


MAX_DELAY = timedelta(minutes=15)


FAILURE_WINDOW = timedelta(hours=24)


def refuse(
    session: Session,
    keys: Sequence[_Key],
    who: Actor,
    now: datetime,
    action: str,
    message: str,
    reason: str,
    target: dict[str, Any] | None = None,
    what: str = "failed sign-ins",
) -> Outcome:
    """Count one failure on each of `keys` and audit it; say how long to wait once throttled."""
    failures, wait = _count_failure(session, keys, now)
    details: dict[str, Any] = {"reason": reason, "failed_attempts": failures}
    if wait is not None:
        details["delay_seconds"] = whole_seconds(wait)
    audit.record(session, who, action, **(target or {}), details=details)
    if wait is None:
        return Outcome(error=message)
    return Outcome(error=f"{message} {throttled_message(wait, what)}")


@dataclass(frozen=True)
class _Key:
    scope: ThrottleScope
    account_key: str
    address: str

    def matches(self) -> Any:
        return and_(
            SignInThrottle.scope == self.scope.value,
            SignInThrottle.account_key == self.account_key,
            SignInThrottle.address == self.address,
        )


_FREE_FAILURES = {
    ThrottleScope.ACCOUNT_ADDRESS: ACCOUNT_FREE_FAILURES,
    ThrottleScope.ADDRESS: ADDRESS_FREE_FAILURES,
    ThrottleScope.CODE: CODE_FREE_FAILURES,
}


def account_key(username: str) -> str:
    """How the throttles name a username (normalised, then SHA-256), whether it exists or not."""
    return hashlib.sha256(username.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()


def _address(origin: Actor) -> str:
    return (origin.ip_address or "")[:45]


def password_keys(name: str, origin: Actor) -> tuple[_Key, _Key]:
    """The username + address pair first, then the address alone."""
    address = _address(origin)
    return (
        _Key(ThrottleScope.ACCOUNT_ADDRESS, account_key(name), address),
        _Key(ThrottleScope.ADDRESS, "", address),
    )


def code_key(username: str) -> _Key:
    return _Key(ThrottleScope.CODE, account_key(username), "")


def throttle_delay(scope: ThrottleScope, failures: int) -> timedelta | None:
    """The wait after the `failures`-th failure in a window: none for the free ones, then
    FIRST_DELAY doubling with each further failure, at most MAX_DELAY."""
    beyond = failures - _FREE_FAILURES[scope]
    if beyond <= 0:
        return None
    return min(FIRST_DELAY * 2 ** min(beyond - 1, 16), MAX_DELAY)


def throttled_message(wait: timedelta, what: str = "failed sign-ins") -> str:
    """How long to wait, in whole minutes rounded up: "Too many failed sign-ins: try again in
    2 minutes." (`what` says what there were too many of)."""
    minutes = max(1, math.ceil(wait.total_seconds() / 60))
    return f"Too many {what}: try again in {minutes} minute{'' if minutes == 1 else 's'}."


def find_block(
    session: Session, keys: Sequence[_Key], now: datetime
) -> tuple[ThrottleScope, timedelta] | None:
    """The scope that makes the caller wait longest right now, and how long; None if none."""
    rows = session.scalars(
        select(SignInThrottle).where(
            or_(*(key.matches() for key in keys)), SignInThrottle.blocked_until > now
        )
    ).all()
    if not rows:
        return None
    row = max(rows, key=lambda r: r.blocked_until or now)
    assert row.blocked_until is not None
    return ThrottleScope(row.scope), row.blocked_until - now


def _count_failure(
    session: Session, keys: Sequence[_Key], now: datetime
) -> tuple[int, timedelta | None]:
    """Count one failure on each key, atomically (row locks on PostgreSQL; SQLite writes one at
    a time). Returns the first key's failures in its window and the longest wait now imposed."""
    session.execute(
        delete(SignInThrottle).where(SignInThrottle.last_failure_at < now - FAILURE_WINDOW)
    )
    counted: list[int] = []
    longest: timedelta | None = None
    for key in keys:
        session.execute(
            insert_new(session, SignInThrottle.__table__)
            .values(
                scope=key.scope.value,
                account_key=key.account_key,
                address=key.address,
                failures=0,
                window_started_at=now,
                last_failure_at=now,
            )
            .on_conflict_do_nothing()
        )
        row = session.scalars(
            select(SignInThrottle)
            .where(key.matches())
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if row.window_started_at <= now - FAILURE_WINDOW:
            row.failures, row.window_started_at = 0, now
        row.failures += 1
        row.last_failure_at = now
        wait = throttle_delay(key.scope, row.failures)
        row.blocked_until = None if wait is None else now + wait
        counted.append(row.failures)
        if wait is not None and (longest is None or wait > longest):
            longest = wait
    session.flush()
    return counted[0], longest


def clear(session: Session, keys: Iterable[_Key]) -> None:
    session.execute(delete(SignInThrottle).where(or_(*(key.matches() for key in keys))))


@dataclass(frozen=True)
class AccountThrottle:
    """What an account's throttles say now (for the Users page)."""

    failures: int = 0  # wrong passwords (per address, added up) and codes in the current windows
    until: datetime | None = None  # the latest moment some address or its codes must wait for


def account_throttles(
    session: Session, usernames: Iterable[str], now: datetime | None = None
) -> dict[str, AccountThrottle]:
    """The throttles of these accounts (password ones from every address, and codes)."""
    now = now or utcnow()
    by_key = {account_key(name): name for name in usernames}
    if not by_key:
        return {}
    rows = session.scalars(
        select(SignInThrottle).where(
            SignInThrottle.scope.in_(
                [ThrottleScope.ACCOUNT_ADDRESS.value, ThrottleScope.CODE.value]
            ),
            SignInThrottle.account_key.in_(list(by_key)),
            SignInThrottle.window_started_at > now - FAILURE_WINDOW,
        )
    ).all()
    found: dict[str, AccountThrottle] = {}
    for row in rows:
        name = by_key[row.account_key]
        seen = found.get(name, AccountThrottle())
        until = row.blocked_until if row.blocked_until and row.blocked_until > now else None
        latest = max((t for t in (seen.until, until) if t is not None), default=None)
        found[name] = AccountThrottle(failures=seen.failures + row.failures, until=latest)
    return found


def clear_account_throttles(session: Session, username: str) -> int:
    """Forget the account's failures (from every address, and its codes); how many rows went.
    Address-wide throttles stay: they belong to the addresses, not to this account."""
    gone = session.execute(
        delete(SignInThrottle).where(
            SignInThrottle.scope.in_(
                [ThrottleScope.ACCOUNT_ADDRESS.value, ThrottleScope.CODE.value]
            ),
            SignInThrottle.account_key == account_key(username),
        )
    )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


def insert_new(session: Session, table: Any) -> Any:
    """INSERT into `table` with the dialect's ON CONFLICT (PostgreSQL and SQLite both have it)."""
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def whole_seconds(wait: timedelta) -> int:
    return math.ceil(wait.total_seconds())
