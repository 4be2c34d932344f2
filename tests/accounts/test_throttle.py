"""Sign-in throttling (core.auth): growing delays per username + address, per address and per
account for codes, never a hard per-account lock; unknown and existing usernames answered alike
after the same work. The clock is injected (or moved with time-machine); nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
import time_machine
from sqlalchemy import event, select

from core import accounts
from core.access import Actor
from core.accounts import rules
from core.crypto import SecretBox, load_cipher
from core.models import AdminActionLog, SignInThrottle, ThrottleScope, User
from tests.support.database import MigratedDatabase

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
PASSWORD = "correct horse battery"
WRONG = "not the password at all"
ATTACKER = Actor(label="anonymous", ip_address="198.51.100.66", user_agent="curl/8")
OFFICE = Actor(label="anonymous", ip_address="192.0.2.10", user_agent="Firefox")


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rules, "BCRYPT_ROUNDS", 4)
    yield


@pytest.fixture
def box(db: MigratedDatabase) -> SecretBox:
    return load_cipher(db.settings)


def add_user(
    db: MigratedDatabase, name: str = "ada", secret: str | None = None, box: SecretBox | None = None
) -> int:
    with db.session() as session:
        user = User(
            username=name,
            password_hash=accounts.hash_password(PASSWORD),
            role="super_admin",
            totp_secret_encrypted=box.encrypt(secret) if secret and box else None,
        )
        session.add(user)
        session.commit()
        return user.id


def attempt(
    db: MigratedDatabase, name: str, password: str, origin: Actor, now: datetime
) -> accounts.Outcome:
    with db.session() as session, session.begin():
        return accounts.check_password(session, name, password, origin, now)


def code_attempt(
    db: MigratedDatabase, box: SecretBox, user_id: int, code: str, now: datetime
) -> accounts.Outcome:
    with db.session() as session, session.begin():
        return accounts.check_sign_in_code(session, user_id, code, OFFICE, box, now)


def wrong_code(secret: str, now: datetime) -> str:
    valid = {pyotp.TOTP(secret).at(now + k * timedelta(seconds=30)) for k in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def audit_rows(db: MigratedDatabase, action: str | None = None) -> list[AdminActionLog]:
    with db.session() as session:
        query = select(AdminActionLog).order_by(AdminActionLog.id)
        if action:
            query = query.where(AdminActionLog.action == action)
        return list(session.scalars(query))


def waits(message: str | None) -> str:
    return (message or "").partition("try again in ")[2]


# --- an attacker cannot keep the owner out --------------------------------------------------------


def test_the_owner_signs_in_from_a_new_address_while_an_attacker_fails_from_another(
    db: MigratedDatabase,
) -> None:
    add_user(db)
    now = T0
    for _ in range(12):  # well past every free failure: the attacker's pair waits 15 minutes
        assert not attempt(db, "ada", WRONG, ATTACKER, now).ok
        now += accounts.MAX_DELAY
    now += SECOND - accounts.MAX_DELAY  # a second after the last failure
    assert attempt(db, "ada", PASSWORD, ATTACKER, now).error == (
        "Too many failed sign-ins: try again in 15 minutes."
    )

    owner = attempt(db, "ada", PASSWORD, OFFICE, now)  # no per-account block
    assert owner.ok and owner.user_id is not None
    # ... while the attacker's pair is still kept waiting.
    assert waits(attempt(db, "ada", WRONG, ATTACKER, now).error) == "15 minutes."


def test_the_attackers_address_waits_longer_after_each_further_failure(
    db: MigratedDatabase,
) -> None:
    add_user(db)
    for n in range(accounts.ACCOUNT_FREE_FAILURES):  # the first four are free
        assert (
            attempt(db, "ada", WRONG, ATTACKER, T0 + n * SECOND).error == accounts.WRONG_CREDENTIALS
        )
    now = T0 + 10 * SECOND
    seen = []
    for _ in range(6):
        outcome = attempt(db, "ada", WRONG, ATTACKER, now)
        assert (outcome.error or "").startswith(accounts.WRONG_CREDENTIALS + " Too many failed")
        seen.append(waits(outcome.error))
        wait = accounts.throttle_delay(ThrottleScope.ACCOUNT_ADDRESS, 5 + len(seen) - 1)
        assert wait is not None
        # Throttled until the wait is over: even the right password is not checked.
        blocked = attempt(db, "ada", PASSWORD, ATTACKER, now + wait - SECOND)
        assert blocked.error == f"Too many failed sign-ins: try again in {waits(blocked.error)}"
        assert waits(blocked.error) == "1 minute."  # one second left, rounded up
        now += wait
    assert seen == [
        "1 minute.",
        "2 minutes.",
        "4 minutes.",
        "8 minutes.",
        "15 minutes.",  # capped
        "15 minutes.",
    ]
    throttled = audit_rows(db, "auth.login_throttled")
    assert len(throttled) == 6
    assert throttled[0].details == {"reason": "account_address", "retry_after_seconds": 1}
    failed = audit_rows(db, "auth.login_failed")
    assert [r.details["failed_attempts"] for r in failed] == list(range(1, 11))
    assert failed[4].details == {"reason": "password", "failed_attempts": 5, "delay_seconds": 60}
    assert all(WRONG not in str(r.details) and PASSWORD not in str(r.details) for r in failed)


def test_the_right_password_clears_its_pair_and_a_day_later_counts_start_afresh(
    db: MigratedDatabase,
) -> None:
    add_user(db)
    for n in range(accounts.ACCOUNT_FREE_FAILURES):
        attempt(db, "ada", WRONG, OFFICE, T0 + n * SECOND)
    assert attempt(db, "ada", PASSWORD, OFFICE, T0 + 10 * SECOND).ok  # a typo or four, then in
    for n in range(accounts.ACCOUNT_FREE_FAILURES):  # four free ones again
        later = T0 + (20 + n) * SECOND
        assert attempt(db, "ada", WRONG, OFFICE, later).error == accounts.WRONG_CREDENTIALS

    next_day = T0 + accounts.FAILURE_WINDOW + MINUTE
    for _ in range(accounts.ACCOUNT_FREE_FAILURES):
        assert attempt(db, "ada", WRONG, OFFICE, next_day).error == accounts.WRONG_CREDENTIALS
    with db.session() as session:
        pair = session.scalars(
            select(SignInThrottle).where(SignInThrottle.scope == "account_address")
        ).one()
    assert (pair.failures, pair.window_started_at) == (4, next_day)


def test_one_address_spraying_many_usernames_is_throttled_as_an_address(
    db: MigratedDatabase,
) -> None:
    add_user(db)
    for n in range(accounts.ADDRESS_FREE_FAILURES):  # one guess each at twenty names
        outcome = attempt(db, f"user{n}", WRONG, ATTACKER, T0 + n * SECOND)
        assert outcome.error == accounts.WRONG_CREDENTIALS
    tripped = attempt(db, "ada", WRONG, ATTACKER, T0 + MINUTE)
    assert waits(tripped.error) == "1 minute."
    blocked = attempt(db, "someone-else", PASSWORD, ATTACKER, T0 + MINUTE + SECOND)
    assert blocked.error == "Too many failed sign-ins: try again in 1 minute."
    assert audit_rows(db, "auth.login_throttled")[-1].details["reason"] == "address"
    # The account itself is not blocked: from another address the right password works.
    assert attempt(db, "ada", PASSWORD, OFFICE, T0 + MINUTE + SECOND).ok
    # A success does not restore the spraying address's budget.
    assert attempt(db, "ada", PASSWORD, ATTACKER, T0 + MINUTE + 2 * SECOND).error == (blocked.error)


# --- unknown and existing usernames are indistinguishable -----------------------------------------


def test_unknown_and_existing_usernames_get_the_same_answers_after_the_same_work(
    db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_user(db)
    bcrypt_calls = []
    real_checkpw = rules.bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        bcrypt_calls.append(1)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(rules.bcrypt, "checkpw", counting_checkpw)
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement.split()[0])

    event.listen(db.engine, "before_cursor_execute", count)

    def run(name: str, origin: Actor) -> list[tuple[str | None, int, list[str]]]:
        seen = []
        for n in range(7):  # free failures, the one that trips, then throttled ones
            bcrypt_calls.clear()
            statements.clear()
            outcome = attempt(db, name, WRONG, origin, T0 + n * SECOND)
            seen.append((outcome.error, len(bcrypt_calls), list(statements)))
        return seen

    try:
        existing = run("ada", ATTACKER)
        unknown = run("nobody", replace(ATTACKER, ip_address="198.51.100.67"))
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert existing == unknown
    assert [calls for _, calls, _ in existing] == [1, 1, 1, 1, 1, 0, 0]  # throttled: no bcrypt
    assert (
        existing[4][0]
        == f"{accounts.WRONG_CREDENTIALS} Too many failed sign-ins: try again in 1 minute."
    )
    assert existing[5][0] == "Too many failed sign-ins: try again in 1 minute."


# --- codes ----------------------------------------------------------------------------------------


def test_wrong_codes_are_throttled_per_account_from_every_address(
    db: MigratedDatabase, box: SecretBox
) -> None:
    secret = pyotp.random_base32()
    user_id = add_user(db, secret=secret, box=box)
    bad = wrong_code(secret, T0)
    for _ in range(accounts.CODE_FREE_FAILURES):
        assert attempt(db, "ada", PASSWORD, OFFICE, T0).needs_code  # the password resets nothing
        assert code_attempt(db, box, user_id, bad, T0).error == accounts.WRONG_CODE
    tripped = code_attempt(db, box, user_id, bad, T0)
    assert tripped.error == f"{accounts.WRONG_CODE} Too many wrong codes: try again in 1 minute."
    # The right code waits too, and so does every address: the guesser has the password.
    right = pyotp.TOTP(secret).at(T0 + 30 * SECOND)
    assert code_attempt(db, box, user_id, right, T0 + 30 * SECOND).error == (
        "Too many wrong codes: try again in 1 minute."
    )
    with db.session() as session, session.begin():
        elsewhere = accounts.check_sign_in_code(
            session, user_id, right, ATTACKER, box, T0 + MINUTE / 2
        )
    assert "Too many wrong codes" in (elsewhere.error or "")
    assert audit_rows(db, "auth.login_throttled")[-1].details == {
        "reason": "code",
        "retry_after_seconds": 30,
    }
    assert code_attempt(db, box, user_id, wrong_code(secret, T0 + MINUTE), T0 + MINUTE).error == (
        f"{accounts.WRONG_CODE} Too many wrong codes: try again in 2 minutes."
    )
    later = T0 + 3 * MINUTE
    assert code_attempt(db, box, user_id, pyotp.TOTP(secret).at(later), later).ok
    with db.session() as session:  # a right code clears the account's code throttle
        assert session.scalars(select(SignInThrottle)).all() == []


def test_step_up_codes_share_the_accounts_code_throttle(
    db: MigratedDatabase, box: SecretBox
) -> None:
    secret = pyotp.random_base32()
    user_id = add_user(db, secret=secret, box=box)
    actor = Actor(label="ada", user_id=user_id, ip_address="192.0.2.10")
    bad = wrong_code(secret, T0)
    for _ in range(accounts.CODE_FREE_FAILURES + 1):
        with db.session() as session, session.begin():
            last = accounts.check_step_up_code(session, actor, bad, box, T0)
    assert "try again in 1 minute" in (last.error or "")
    with db.session() as session, session.begin():
        right = pyotp.TOTP(secret).at(T0)
        blocked = accounts.check_step_up_code(session, actor, right, box, T0 + SECOND)
    assert blocked.error == "Too many wrong codes: try again in 1 minute."
    assert [r.action for r in audit_rows(db)][-2:] == [
        "auth.step_up_failed",
        "auth.step_up_throttled",
    ]
    assert code_attempt(db, box, user_id, right, T0 + 2 * SECOND).error == blocked.error


def test_a_wrong_current_password_counts_and_is_throttled_like_a_sign_in(
    db: MigratedDatabase,
) -> None:
    user_id = add_user(db)
    actor = replace(ATTACKER, label="ada", user_id=user_id)
    for _ in range(accounts.ACCOUNT_FREE_FAILURES + 1):
        with db.session() as session, session.begin():
            outcome = accounts.change_password(session, actor, WRONG, "a brand new passphrase", T0)
    assert "Too many wrong passwords: try again in 1 minute." in (outcome.error or "")
    with db.session() as session, session.begin():
        blocked = accounts.change_password(session, actor, PASSWORD, "quiet violet harbour", T0)
    assert blocked.error == "Too many wrong passwords: try again in 1 minute."
    # It is the same pair as signing in from that address.
    assert "Too many failed sign-ins" in (attempt(db, "ada", PASSWORD, ATTACKER, T0).error or "")
    assert audit_rows(db)[-2].action == "auth.password_change_throttled"


# --- the Users page's view and Unlock -------------------------------------------------------------


def test_unlock_clears_the_accounts_throttles_but_not_the_address(
    db: MigratedDatabase, box: SecretBox
) -> None:
    secret = pyotp.random_base32()
    ada = add_user(db, secret=secret, box=box)
    root = add_user(db, "root")
    with time_machine.travel(T0, tick=False):
        admin = Actor(label="root", user_id=root, mfa_verified_at=T0)
        for _ in range(accounts.ACCOUNT_FREE_FAILURES + 1):
            attempt(db, "ada", WRONG, ATTACKER, T0)
            code_attempt(db, box, ada, wrong_code(secret, T0), T0)
        for n in range(accounts.ADDRESS_FREE_FAILURES + 1):
            attempt(db, f"someone{n}", WRONG, OFFICE, T0)
        with db.session() as session:
            views = {v.username: v for v in accounts.list_users(session, admin)}
        assert views["ada"].status() == "throttled" and views["ada"].failed_logins == 10
        assert views["ada"].throttled_until == T0 + accounts.FIRST_DELAY
        assert views["root"].status() == "active" and views["root"].failed_logins == 0

        with db.session() as session, session.begin():
            view = accounts.unlock(session, admin, ada)
        assert (view.status(), view.failed_logins, view.throttled_until) == ("active", 0, None)
        assert attempt(db, "ada", PASSWORD, ATTACKER, T0).needs_code  # the pair is cleared
        assert code_attempt(db, box, ada, pyotp.TOTP(secret).at(T0), T0).ok  # and the codes
        # The spraying office address is the address's own: unlocking ada leaves it.
        assert "Too many" in (attempt(db, "ada", PASSWORD, OFFICE, T0).error or "")
