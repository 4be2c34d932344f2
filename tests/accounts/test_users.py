"""core.users: super-admins manage accounts, always with a fresh code, never losing the last
super-admin, and every change lands in the audit trail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from core import accounts
from core.access import Actor, PermissionDenied, StepUpRequired
from core.accounts import rules
from core.crypto import load_cipher
from core.models import AdminActionLog, User, UserRole, utcnow
from tests.support.database import MigratedDatabase

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rules, "BCRYPT_ROUNDS", 4)
    yield


def add(db: MigratedDatabase, name: str, role: str = "super_admin", **columns: object) -> Actor:
    """The account, and an Actor for it that proved a code just now."""
    with db.session() as session:
        user = User(
            username=name, password_hash=accounts.hash_password(PASSWORD), role=role, **columns
        )
        session.add(user)
        session.commit()
        return Actor(label=name, user_id=user.id, ip_address="192.0.2.1", mfa_verified_at=utcnow())


def run(db: MigratedDatabase, call, *args):  # type: ignore[no-untyped-def]
    with db.session() as session, session.begin():
        return call(session, *args)


def test_a_super_admin_adds_users_with_an_initial_password(db: MigratedDatabase) -> None:
    admin = add(db, "root")
    view = run(db, accounts.create_user, admin, " Bob ", PASSWORD, "analyst", "Bob B.", "b@x.org")
    assert (view.username, view.role, view.display_name, view.email) == (
        "bob",
        "analyst",
        "Bob B.",
        "b@x.org",
    )
    assert run(db, accounts.check_password, "bob", PASSWORD, Actor(label="anonymous")).ok
    with pytest.raises(accounts.AuthError, match="'bob' is taken"):
        run(db, accounts.create_user, admin, "BOB", PASSWORD, "analyst")
    with pytest.raises(accounts.AuthError, match="at least 12"):
        run(db, accounts.create_user, admin, "carol", "short", "analyst")
    with pytest.raises(accounts.AuthError, match="Unknown role 'owner'"):
        run(db, accounts.create_user, admin, "carol", PASSWORD, "owner")
    listed = run(db, accounts.list_users, admin)
    assert [(u.username, u.status(), u.mfa_enrolled) for u in listed] == [
        ("bob", "active", False),
        ("root", "active", False),
    ]


def test_changes_need_a_fresh_code_and_the_super_admin_role(db: MigratedDatabase) -> None:
    admin = add(db, "root")
    analyst = add(db, "ann", role="analyst")
    stale = Actor(label="root", user_id=admin.user_id)
    with pytest.raises(StepUpRequired):
        run(db, accounts.create_user, stale, "bob", PASSWORD, "analyst")
    with pytest.raises(StepUpRequired):
        run(db, accounts.set_active, stale, analyst.user_id, False)
    for call, args in ((accounts.list_users, ()), (accounts.unlock, (admin.user_id,))):
        with pytest.raises(PermissionDenied, match="needs the super-admin role"):
            run(db, call, analyst, *args)


def test_the_last_active_super_admin_is_never_disabled_or_demoted(db: MigratedDatabase) -> None:
    root = add(db, "root")
    operator = Actor.cli()
    for call, args in ((accounts.set_active, (False,)), (accounts.change_role, ("analyst",))):
        with pytest.raises(PermissionDenied, match="last active super-admin"):
            run(db, call, operator, root.user_id, *args)
    with pytest.raises(PermissionDenied, match="cannot disable your own account"):
        run(db, accounts.set_active, root, root.user_id, False)
    with pytest.raises(PermissionDenied, match="cannot change your own role"):
        run(db, accounts.change_role, root, root.user_id, "analyst")

    other = add(db, "other")
    assert run(db, accounts.change_role, other, root.user_id, "analyst").role == "analyst"
    with pytest.raises(PermissionDenied, match="last active super-admin"):
        run(db, accounts.change_role, operator, other.user_id, "analyst")
    # A disabled super-admin does not count as the one who can still administer.
    run(db, accounts.change_role, operator, root.user_id, "super_admin")
    run(db, accounts.set_active, other, root.user_id, False)
    with pytest.raises(PermissionDenied, match="last active super-admin"):
        run(db, accounts.set_active, operator, other.user_id, False)


def test_disable_reset_mfa_and_unlock_take_effect_and_are_audited(db: MigratedDatabase) -> None:
    root = add(db, "root")
    box = load_cipher(db.settings)
    bob = add(
        db,
        "bob",
        role="analyst",
        totp_secret_encrypted=box.encrypt(accounts.new_totp_secret()),
        totp_last_step=99,
    )
    signed_in_at = utcnow()
    guesser = Actor(label="anonymous", ip_address="198.51.100.66")
    for _ in range(accounts.ACCOUNT_FREE_FAILURES + 1):
        run(db, accounts.check_password, "bob", "not bob's password", guesser)
    [throttled] = [v for v in run(db, accounts.list_users, root) if v.username == "bob"]
    assert (throttled.status(), throttled.failed_logins) == ("throttled", 5)

    view = run(db, accounts.unlock, root, bob.user_id)
    assert (view.failed_logins, view.throttled_until, view.status()) == (0, None, "active")
    view = run(db, accounts.reset_mfa, root, bob.user_id)
    assert not view.mfa_enrolled
    with db.session() as session:
        user = session.get(User, bob.user_id)
        assert user is not None and (user.totp_secret_encrypted, user.totp_last_step) == (
            None,
            None,
        )
        assert accounts.session_user(session, bob.user_id, signed_in_at) is None  # signed out
    view = run(db, accounts.set_active, root, bob.user_id, False)
    assert view.status() == "disabled"
    assert not run(db, accounts.check_password, "bob", PASSWORD, Actor(label="anonymous")).ok
    run(db, accounts.set_active, root, bob.user_id, True)
    run(db, accounts.change_role, root, bob.user_id, UserRole.SUPER_ADMIN)

    with db.session() as session:
        rows = session.scalars(
            select(AdminActionLog)
            .where(AdminActionLog.actor_id == root.user_id)
            .order_by(AdminActionLog.id)
        )
        trail = [(r.action, r.target_id, r.ip_address, r.details) for r in rows]
    bob_id = str(bob.user_id)
    assert trail == [
        ("user.unlocked", bob_id, "192.0.2.1", {"username": "bob"}),
        ("user.mfa_reset", bob_id, "192.0.2.1", {"username": "bob"}),
        ("user.disabled", bob_id, "192.0.2.1", {"username": "bob"}),
        ("user.enabled", bob_id, "192.0.2.1", {"username": "bob"}),
        (
            "user.role_changed",
            bob_id,
            "192.0.2.1",
            {"username": "bob", "from": "analyst", "to": "super_admin"},
        ),
    ]


def test_the_operator_can_create_the_first_user_which_ends_the_setup(db: MigratedDatabase) -> None:
    assert run(db, accounts.issue_setup_token) is not None
    view = run(db, accounts.create_user, Actor.cli(), "root", PASSWORD, "super_admin")
    assert view.role == "super_admin"
    assert run(db, accounts.issue_setup_token) is None
    with db.session() as session:
        rows = session.scalars(select(AdminActionLog).order_by(AdminActionLog.id)).all()
    assert [row.action for row in rows] == ["setup.token_issued", "user.created"]
    assert all(row.actor_label.startswith("cli:") for row in rows)
