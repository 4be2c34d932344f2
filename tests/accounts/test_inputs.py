"""What accounts accept: guessable passwords refused with zxcvbn's reason (the user's own names
count as the first guesses), no control characters in any field (checked in core, before
PostgreSQL can refuse NUL with a raw error), bounded display names and well-formed emails."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from core import accounts
from core.access import Actor
from core.accounts import rules
from core.crypto import load_cipher
from core.models import AdminActionLog, User, utcnow
from tests.support.database import MigratedDatabase

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"
ORIGIN = Actor(label="anonymous", ip_address="203.0.113.9")
CONTROL = accounts.NO_CONTROL_CHARACTERS


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rules, "BCRYPT_ROUNDS", 4)
    yield


@pytest.fixture
def admin(db: MigratedDatabase) -> Actor:
    with db.session() as session:
        root = User(
            username="root", password_hash=accounts.hash_password(PASSWORD), role="super_admin"
        )
        session.add(root)
        session.commit()
        return Actor(label="root", user_id=root.id, mfa_verified_at=utcnow())


def create(db: MigratedDatabase, actor: Actor, name: str, password: str, **more: str) -> object:
    with db.session() as session, session.begin():
        return accounts.create_user(session, actor, name, password, "analyst", **more)


def count_users(db: MigratedDatabase) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(User)) or 0


# --- guessable passwords ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "username", "display_name", "email", "message"),
    [
        ("alice-console-2026", "alice", "", None, "contains your username, name or email"),
        ("Quintanilla harbour 7", "bob", "Roberta Quintanilla", None, "contains your username"),
        ("roberta1990!", "bob", "Roberta Q", None, "contains your username"),
        ("qUiNtAnIlLa-rocks-99", "bob", "", "r.quintanilla@example.org", "contains your username"),
        ("password1234", "bob", "", None, "This is a very common password"),
        ("qwertyuiopas", "bob", "", None, "similar to a commonly used password"),
        ("aaaaaaaaaaaaaa", "bob", "", None, 'Repeats like "aaa" are easy to guess'),
    ],
)
def test_guessable_passwords_are_refused_saying_why(
    password: str, username: str, display_name: str, email: str | None, message: str
) -> None:
    with pytest.raises(accounts.AuthError, match=message) as refused:
        accounts.check_new_password(password, username, display_name, email)
    if "contains" not in message:
        assert "too easy to guess" in str(refused.value) and "Add another word" in str(
            refused.value
        )


def test_strong_passwords_and_the_length_rules_still_hold() -> None:
    accounts.check_new_password(
        "quiet violet harbour", "alice", "Alice Liddell", "alice@example.org"
    )
    with pytest.raises(accounts.AuthError, match="at least 12 characters"):
        accounts.check_new_password("Xq7#vL2!", "alice")
    with pytest.raises(accounts.AuthError, match="at most 72 bytes"):
        accounts.check_new_password("é" * 40, "alice")


def test_creating_a_user_feeds_their_names_to_the_check(db: MigratedDatabase, admin: Actor) -> None:
    with pytest.raises(accounts.AuthError, match="contains your username"):
        create(db, admin, "alice", "alice-console-2026")
    with pytest.raises(accounts.AuthError, match="contains your username"):
        create(db, admin, "bob", "liddell garden party", display_name="Alice Liddell")
    with pytest.raises(accounts.AuthError, match="contains your username"):
        create(db, admin, "carol", "wonderland77 teapot", email="wonderland77@example.org")
    assert count_users(db) == 1
    create(db, admin, "alice", "quiet violet harbour", display_name="Alice Liddell")


def test_setup_and_password_changes_refuse_guessable_passwords(db: MigratedDatabase) -> None:
    with db.session() as session, session.begin():
        issued = accounts.issue_setup_token(session, T0)
    assert issued is not None
    with db.session() as session, session.begin():
        weak = accounts.complete_setup(
            session, issued.token, "alice", "alice-console-2026", ORIGIN, now=T0
        )
    assert "contains your username" in (weak.error or "")
    with db.session() as session, session.begin():
        done = accounts.complete_setup(
            session, issued.token, "alice", PASSWORD, ORIGIN, "A. Liddell", now=T0
        )
    assert done.ok
    actor = Actor(label="alice", user_id=done.user_id)
    with db.session() as session, session.begin():
        change = accounts.change_password(session, actor, PASSWORD, "liddell-2026-console")
    assert "contains your username" in (change.error or "")
    with db.session() as session, session.begin():
        common = accounts.change_password(session, actor, PASSWORD, "password1234")
    assert "This is a very common password" in (common.error or "")


def test_every_bad_account_field_is_named_at_once_so_a_form_can_show_each_beside_it() -> None:
    errors = accounts.account_field_errors(" Bad Name! ", "short", "x" * 201, "not-an-address")
    assert set(errors) == {"username", "display_name", "email", "password"}
    assert errors["username"].startswith("Usernames are 1–150 characters")
    assert errors["password"].startswith("Choose a password of at least")
    assert accounts.account_field_errors("alice", PASSWORD, "Alice", "a@example.org") == {}
    # The password is checked against the names as they will be stored.
    weak = accounts.account_field_errors("  Alice ", "alice-console-2026")
    assert list(weak) == ["password"] and "contains your username" in weak["password"]


def test_refusals_name_the_field_they_are_about(db: MigratedDatabase, admin: Actor) -> None:
    with pytest.raises(accounts.AuthError) as weak:
        create(db, admin, "alice", "password1234")
    assert weak.value.field == "password"
    create(db, admin, "alice", PASSWORD)
    with pytest.raises(accounts.AuthError, match="is taken") as taken:
        create(db, admin, "Alice", "quiet violet harbour")
    assert taken.value.field == "username"


def test_setup_refusals_name_the_field_they_are_about(db: MigratedDatabase) -> None:
    with db.session() as session, session.begin():
        issued = accounts.issue_setup_token(session, T0)
    assert issued is not None

    def setup(token: str, username: str, password: str) -> accounts.Outcome:
        with db.session() as session, session.begin():
            return accounts.complete_setup(session, token, username, password, ORIGIN, now=T0)

    assert setup("wrong", "alice", PASSWORD).field == "token"
    assert setup(issued.token, "bad name!", PASSWORD).field == "username"
    assert setup(issued.token, "alice", "short").field == "password"
    assert setup(issued.token, "alice", PASSWORD).ok
    again = setup(issued.token, "bob", PASSWORD)
    assert again.error == "The console is already set up: sign in instead."
    assert again.field is None  # about no field: nothing to correct in the form


# --- control characters, lengths and shapes ------------------------------------------------------


@pytest.mark.parametrize("bad", ["\x00", "\x07", "\n", "\x1b", "\x7f", "\x85", "\ud800"])
@pytest.mark.parametrize("field", ["username", "display_name", "email", "password"])
def test_control_characters_are_refused_in_every_field_before_the_database(
    db: MigratedDatabase, admin: Actor, field: str, bad: str
) -> None:
    values = {
        "username": "bob",
        "display_name": "Bob B.",
        "email": "bob@example.org",
        "password": "quiet violet harbour",
    }
    values[field] = values[field][:2] + bad + values[field][2:]
    nice = {"display_name": "The display name", "email": "The email address"}
    what = nice.get(field, f"The {field}")
    with pytest.raises(accounts.AuthError) as refused:
        create(
            db,
            admin,
            values["username"],
            values["password"],
            display_name=values["display_name"],
            email=values["email"],
        )
    assert str(refused.value) == f"{what} {CONTROL}"
    assert count_users(db) == 1  # nothing saved


def test_control_characters_at_sign_in_setup_and_codes_get_the_same_clear_message(
    db: MigratedDatabase,
) -> None:
    with db.session() as session, session.begin():
        issued = accounts.issue_setup_token(session, T0)
    assert issued is not None
    for token, name, password, shown, what in (
        (issued.token + "\x00", "root", PASSWORD, "", "The setup token"),
        (issued.token, "ro\x00ot", PASSWORD, "", "The username"),
        (issued.token, "root", PASSWORD, "R\x00", "The display name"),
        (issued.token, "root", PASSWORD + "\x00", "", "The password"),
    ):
        with db.session() as session, session.begin():
            outcome = accounts.complete_setup(session, token, name, password, ORIGIN, shown, T0)
        assert outcome.error == f"{what} {CONTROL}"
    assert count_users(db) == 0
    with db.session() as session, session.begin():
        done = accounts.complete_setup(session, issued.token, "root", PASSWORD, ORIGIN, "", T0)
    assert done.ok and done.user_id is not None

    for name, password, what in (
        ("ro\x00ot", PASSWORD, "username"),
        ("root", "a\x00b", "password"),
    ):
        with db.session() as session, session.begin():
            outcome = accounts.check_password(session, name, password, ORIGIN, T0)
        assert outcome.error == f"The {what} {CONTROL}"
    box = load_cipher(db.settings)
    secret = accounts.new_totp_secret()
    actor = Actor(label="root", user_id=done.user_id)
    with db.session() as session, session.begin():
        enrol = accounts.confirm_enrolment(session, actor, box, secret, "12\x0034", T0)
        assert enrol.error == f"The code {CONTROL}"
        resumed = accounts.resume_session(session, "ro\x00ot", T0, ORIGIN, T0)
        assert resumed.error == "Sign in again."
        changed = accounts.change_password(session, actor, "x\x00", "quiet violet harbour", T0)
        assert changed.error == f"The current password {CONTROL}"
    with db.session() as session:
        trail = session.scalars(select(AdminActionLog.details).order_by(AdminActionLog.id)).all()
    assert {"reason": "control characters"} in trail


def test_display_names_are_at_most_200_characters(db: MigratedDatabase, admin: Actor) -> None:
    with pytest.raises(accounts.AuthError, match="at most 200 characters"):
        create(db, admin, "bob", "quiet violet harbour", display_name="B" * 201)
    assert count_users(db) == 1
    view = create(db, admin, "bob", "quiet violet harbour", display_name=" " + "B" * 200 + " ")
    assert view.display_name == "B" * 200  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "email",
    [
        "bob",
        "bob@example",
        "bob@@example.org",
        "bob@exa@mple.org",
        "b ob@example.org",
        "@example.org",
        "bob@.example.org",
        "bob@example.org.",
        "b" * 243 + "@example.org",  # 255 characters
    ],
)
def test_malformed_emails_are_refused(db: MigratedDatabase, admin: Actor, email: str) -> None:
    with pytest.raises(accounts.AuthError, match=r"like name@example\.com"):
        create(db, admin, "bob", "quiet violet harbour", email=email)
    assert count_users(db) == 1


def test_well_formed_emails_are_kept_trimmed_and_empty_means_none(
    db: MigratedDatabase, admin: Actor
) -> None:
    longest = "b" * 242 + "@example.org"  # 254 characters
    assert create(db, admin, "bob", "quiet violet harbour", email=f" {longest} ").email == longest  # type: ignore[attr-defined]
    assert create(db, admin, "carol", "quiet violet harbour", email="  ").email is None  # type: ignore[attr-defined]
