"""core.auth: passwords, TOTP with its replay guard, enrolment, sessions, and the first-run setup
token (the throttles are in test_auth_throttle.py). The clock is injected; nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select, text
from streamlit_authenticator.utilities.hasher import Hasher

from core import accounts
from core.access import Actor, require_step_up
from core.accounts import rules
from core.config import ConfigError, Settings
from core.crypto import SecretBox, load_cipher
from core.models import AdminActionLog, ResumedSignIn, SetupToken, User
from tests.support.database import MigratedDatabase

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)  # a TOTP step boundary
STEP = timedelta(seconds=30)
PASSWORD = "correct horse battery"
ORIGIN = Actor(label="anonymous", ip_address="203.0.113.9", user_agent="pytest-browser/1.0")


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """bcrypt's cost is a work factor, not behaviour: tests use the minimum."""
    monkeypatch.setattr(rules, "BCRYPT_ROUNDS", 4)
    yield


@pytest.fixture
def box(db: MigratedDatabase) -> SecretBox:
    return load_cipher(db.settings)


def add_user(
    db: MigratedDatabase,
    username: str = "ada",
    role: str = "super_admin",
    secret: str | None = None,
    box: SecretBox | None = None,
) -> int:
    with db.session() as session:
        user = User(
            username=username,
            password_hash=accounts.hash_password(PASSWORD),
            role=role,
            totp_secret_encrypted=box.encrypt(secret) if secret and box else None,
        )
        session.add(user)
        session.commit()
        return user.id


def attempt(
    db: MigratedDatabase, password: str, now: datetime, name: str = "ada"
) -> accounts.Outcome:
    """One sign-in attempt in its own session and transaction, as one request would make it."""
    with db.session() as session, session.begin():
        return accounts.check_password(session, name, password, ORIGIN, now)


def code_attempt(
    db: MigratedDatabase, box: SecretBox, user_id: int, code: str, now: datetime
) -> accounts.Outcome:
    with db.session() as session, session.begin():
        return accounts.check_sign_in_code(session, user_id, code, ORIGIN, box, now)


def wrong_code(secret: str, now: datetime) -> str:
    """A well-formed code that no step within the accepted window has."""
    valid = {pyotp.TOTP(secret).at(now + k * STEP) for k in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def audit_rows(db: MigratedDatabase) -> list[AdminActionLog]:
    with db.session() as session:
        return list(session.scalars(select(AdminActionLog).order_by(AdminActionLog.id)))


# --- passwords -------------------------------------------------------------------------------


def test_passwords_are_bcrypt_hashes_that_streamlit_authenticator_also_reads() -> None:
    hashed = accounts.hash_password(PASSWORD)
    assert Hasher.is_hash(hashed) and PASSWORD not in hashed
    assert accounts.verify_password(PASSWORD, hashed)
    assert Hasher.check_pw(PASSWORD, hashed)
    assert accounts.verify_password(PASSWORD, Hasher.hash(PASSWORD))
    assert not accounts.verify_password(PASSWORD + "!", hashed)
    assert not accounts.verify_password("x" * 100, hashed)  # over bcrypt's 72 bytes: no crash
    assert not accounts.verify_password(PASSWORD, "not a hash")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 12 characters"),
        ("é" * 40, "at most 72 bytes"),
        ("Ada.Lovelace", "must not be the username"),
    ],
)
def test_weak_passwords_are_refused_with_what_to_do(password: str, message: str) -> None:
    with pytest.raises(accounts.AuthError, match=message):
        accounts.check_new_password(password, "ada.lovelace")


def test_usernames_are_normalised_and_checked() -> None:
    assert accounts.normalize_username("  Ada.Lovelace@Example ") == "ada.lovelace@example"
    for bad in ("", " ", "-ada", "a b", "x" * 151, "<script>"):
        with pytest.raises(accounts.AuthError, match="Usernames are"):
            accounts.normalize_username(bad)


def test_an_unknown_username_is_refused_like_a_wrong_password(db: MigratedDatabase) -> None:
    add_user(db)
    assert attempt(db, PASSWORD, T0, name="eve").error == accounts.WRONG_CREDENTIALS
    [row] = audit_rows(db)
    assert (row.action, row.actor_label, row.actor_id) == ("auth.login_failed", "anonymous", None)
    assert row.ip_address == "203.0.113.9" and row.user_agent == "pytest-browser/1.0"
    assert "eve" not in str(row.details)  # a mistyped password in the name field stays out


def test_a_disabled_account_cannot_sign_in(db: MigratedDatabase) -> None:
    user_id = add_user(db, role="analyst")
    with db.session() as session:
        session.get(User, user_id).is_active = False  # type: ignore[union-attr]
        session.commit()
    assert "disabled" in (attempt(db, PASSWORD, T0).error or "")


# --- TOTP ------------------------------------------------------------------------------------


def test_the_password_of_an_enrolled_user_is_followed_by_a_code(
    db: MigratedDatabase, box: SecretBox
) -> None:
    secret = pyotp.random_base32()
    user_id = add_user(db, secret=secret, box=box)
    first = attempt(db, PASSWORD, T0)
    assert first.ok and first.needs_code and first.user_id == user_id
    assert first.verified_at is None  # nothing proven beyond the password yet
    assert [row.action for row in audit_rows(db)] == []  # not signed in yet

    signed_in = code_attempt(db, box, user_id, pyotp.TOTP(secret).at(T0), T0)
    assert signed_in.ok and signed_in.verified_at == T0
    assert [(r.action, r.details) for r in audit_rows(db)] == [
        ("auth.login", {"via": "password and code"})
    ]


def test_a_used_code_cannot_be_replayed_nor_an_older_one_used(
    db: MigratedDatabase, box: SecretBox
) -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    user_id = add_user(db, secret=secret, box=box)
    assert code_attempt(db, box, user_id, totp.at(T0), T0).ok
    assert code_attempt(db, box, user_id, totp.at(T0), T0 + STEP).error == accounts.REPLAYED_CODE
    # The step before was never used, but it is older than one that was: also refused.
    assert code_attempt(db, box, user_id, totp.at(T0 - STEP), T0).error == accounts.REPLAYED_CODE
    # valid_window=1: the next step's code is accepted (a phone clock slightly ahead).
    assert code_attempt(db, box, user_id, totp.at(T0 + STEP), T0).ok
    with db.session() as session:
        assert session.get(User, user_id).totp_last_step == totp.timecode(T0) + 1  # type: ignore[union-attr]


def test_codes_outside_the_window_or_malformed_are_wrong() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    assert accounts.code_step(secret, totp.at(T0), T0) == totp.timecode(T0)
    assert accounts.code_step(secret, f" {totp.at(T0)[:3]} {totp.at(T0)[3:]} ", T0) is not None
    assert accounts.code_step(secret, totp.at(T0 + 2 * STEP), T0) is None
    assert accounts.code_step(secret, totp.at(T0 - 2 * STEP), T0) is None
    for junk in ("", "12345", "1234567", "abcdef"):
        assert accounts.code_step(secret, junk, T0) is None


def test_enrolment_saves_the_secret_only_after_a_valid_code(
    db: MigratedDatabase, box: SecretBox
) -> None:
    user_id = add_user(db)
    actor = Actor(label="ada", user_id=user_id)
    secret = accounts.new_totp_secret()
    with db.session() as session, session.begin():
        refused = accounts.confirm_enrolment(session, actor, box, secret, "123456", T0 + 9 * STEP)
    assert "does not match" in (refused.error or "")
    with db.session() as session:
        assert session.get(User, user_id).totp_secret_encrypted is None  # type: ignore[union-attr]

    with db.session() as session, session.begin():
        done = accounts.confirm_enrolment(
            session, actor, box, secret, pyotp.TOTP(secret).at(T0), T0
        )
    assert done.ok and done.verified_at == T0
    with db.session() as session:
        stored = session.get(User, user_id).totp_secret_encrypted  # type: ignore[union-attr]
        assert stored is not None and secret not in stored and box.decrypt(stored) == secret
        raw = session.execute(text("SELECT * FROM users")).all()
    assert secret not in repr(raw) and PASSWORD not in repr(raw)
    # The confirming code was used: it cannot sign in too.
    assert code_attempt(db, box, user_id, pyotp.TOTP(secret).at(T0), T0).error == (
        accounts.REPLAYED_CODE
    )
    assert [(row.action, row.details) for row in audit_rows(db)] == [
        ("auth.mfa_enrolment_failed", {"reason": "wrong code"}),
        ("auth.mfa_enrolled", {}),
        ("auth.login_failed", {"reason": "replayed code"}),
    ]


def test_the_qr_code_is_a_png_of_the_provisioning_uri() -> None:
    uri = accounts.provisioning_uri(accounts.new_totp_secret(), "ada")
    assert uri.startswith("otpauth://totp/") and "issuer=AI%20Provider%20Console" in uri
    assert accounts.qr_code_png(uri).startswith(b"\x89PNG")


def test_a_step_up_code_makes_sensitive_actions_possible_for_ten_minutes(
    db: MigratedDatabase, box: SecretBox
) -> None:
    secret = pyotp.random_base32()
    user_id = add_user(db, secret=secret, box=box)
    actor = Actor(label="ada", user_id=user_id)
    with db.session() as session, session.begin():
        outcome = accounts.check_step_up_code(session, actor, pyotp.TOTP(secret).at(T0), box, T0)
    assert outcome.ok and outcome.verified_at == T0
    fresh = Actor(label="ada", user_id=user_id, mfa_verified_at=outcome.verified_at)
    require_step_up(fresh, T0 + timedelta(minutes=10))
    with db.session() as session, session.begin():
        again = accounts.check_step_up_code(session, actor, pyotp.TOTP(secret).at(T0), box, T0)
    assert again.error == accounts.REPLAYED_CODE
    with db.session() as session, session.begin():
        wrong = accounts.check_step_up_code(session, actor, wrong_code(secret, T0), box, T0)
    assert wrong.error == accounts.WRONG_CODE
    assert [(row.action, row.details.get("reason")) for row in audit_rows(db)] == [
        ("auth.step_up", None),
        ("auth.step_up_failed", "replayed code"),  # a replay is refused and audited
        ("auth.step_up_failed", "code"),
    ]


# --- sessions --------------------------------------------------------------------------------


def test_logout_and_password_change_end_older_sessions_and_cookies(db: MigratedDatabase) -> None:
    user_id = add_user(db, role="analyst")
    actor = Actor(label="ada", user_id=user_id)
    with db.session() as session, session.begin():
        assert accounts.session_user(session, user_id, T0) is not None
        accounts.sign_out(session, actor, T0 + STEP)
    with db.session() as session, session.begin():
        assert accounts.session_user(session, user_id, T0) is None
        assert accounts.session_user(session, user_id, T0 + 2 * STEP) is not None
        assert not accounts.resume_session(session, "ada", T0, ORIGIN, T0 + 2 * STEP).ok
        resumed = accounts.resume_session(session, "ada", T0 + 2 * STEP, ORIGIN, T0 + 3 * STEP)
        assert resumed.ok and not resumed.needs_code

    with db.session() as session, session.begin():
        wrong = accounts.change_password(session, actor, "nope", "a new long password", T0)
        assert wrong.error == "The current password is not right."
        weak = accounts.change_password(session, actor, PASSWORD, "short", T0)
        assert "at least 12" in (weak.error or "")
        changed = accounts.change_password(
            session, actor, PASSWORD, "a new long password", T0 + 4 * STEP
        )
        assert changed.ok and changed.at == T0 + 4 * STEP
    with db.session() as session:
        assert accounts.session_user(session, user_id, T0 + 3 * STEP) is None
        assert accounts.session_user(session, user_id, T0 + 4 * STEP) is not None
    assert attempt(db, "a new long password", T0 + 5 * STEP).ok
    actions = [row.action for row in audit_rows(db)]
    assert actions == [
        "auth.logout",
        "auth.login",
        "auth.password_change_failed",
        "auth.password_changed",
        "auth.login",
    ]


def test_a_cookie_is_audited_as_a_sign_in_once_not_at_every_page_load(
    db: MigratedDatabase,
) -> None:
    user_id = add_user(db, role="analyst")

    def resume(issued_at: datetime, now: datetime) -> accounts.Outcome:
        with db.session() as session, session.begin():
            return accounts.resume_session(session, "ada", issued_at, ORIGIN, now)

    assert resume(T0, T0 + STEP).ok  # the first page load with this cookie
    assert resume(T0, T0 + 2 * STEP).ok  # a reload: same cookie, not a new sign-in
    assert resume(T0, T0 + 3 * STEP).ok
    logins = [r for r in audit_rows(db) if r.action == "auth.login"]
    assert [(r.actor_id, r.details, r.ip_address) for r in logins] == [
        (user_id, {"via": "cookie"}, "203.0.113.9")
    ]
    assert resume(T0 + 4 * STEP, T0 + 5 * STEP).ok  # another browser's cookie: a new sign-in
    assert resume(T0 + 4 * STEP, T0 + 6 * STEP).ok
    assert [r.action for r in audit_rows(db)].count("auth.login") == 2
    # Cookies past their lifetime are forgotten; only the live ones are remembered.
    resume(T0 + accounts.REMEMBER_SIGN_IN, T0 + accounts.REMEMBER_SIGN_IN + 3 * STEP)
    with db.session() as session:
        kept = session.scalars(select(ResumedSignIn.issued_at).order_by("issued_at")).all()
    assert kept == [T0 + 4 * STEP, T0 + accounts.REMEMBER_SIGN_IN]


def test_a_cookie_never_replaces_the_code(db: MigratedDatabase, box: SecretBox) -> None:
    add_user(db, secret=pyotp.random_base32(), box=box)
    with db.session() as session, session.begin():
        resumed = accounts.resume_session(session, "ada", T0, ORIGIN, T0)
    assert resumed.ok and resumed.needs_code and resumed.verified_at is None


# --- first run -------------------------------------------------------------------------------


def setup(db: MigratedDatabase, token: str, now: datetime = T0, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    with db.session() as session, session.begin():
        return accounts.complete_setup(session, token, "Ada", password, ORIGIN, "Ada L.", now)


def issue(db: MigratedDatabase, now: datetime = T0) -> accounts.IssuedSetupToken | None:
    with db.session() as session, session.begin():
        return accounts.issue_setup_token(session, now)


def test_the_setup_token_is_stored_hashed_and_works_once(db: MigratedDatabase) -> None:
    issued = issue(db)
    assert issued is not None and issued.expires_at == T0 + accounts.SETUP_TOKEN_LIFETIME
    assert issued.token not in repr(issued)
    with db.session() as session:
        raw = session.execute(text("SELECT * FROM setup_tokens")).all()
    assert len(raw) == 1 and issued.token not in repr(raw)

    wrong = setup(db, "not-the-token")
    assert "not the setup token" in (wrong.error or "")
    weak = setup(db, issued.token, password="short")
    assert "at least 12" in (weak.error or "")  # the token is not used up by a weak password

    done = setup(db, f"  {issued.token}\n")
    assert done.ok
    with db.session() as session:
        admin = session.get(User, done.user_id)
        assert admin is not None and (admin.username, admin.role) == ("ada", "super_admin")
        assert admin.display_name == "Ada L." and admin.last_login_at == T0
        assert session.scalars(select(SetupToken)).all() == []
    assert "already set up" in (setup(db, issued.token).error or "")
    assert issue(db) is None  # a user exists: migrate prints no token any more
    assert [row.action for row in audit_rows(db)] == [
        "setup.token_issued",
        "setup.failed",
        "setup.completed",
        "auth.login",
    ]


def test_issuing_a_setup_token_is_audited_without_the_token(db: MigratedDatabase) -> None:
    issued = issue(db)
    assert issued is not None
    [row] = audit_rows(db)
    assert (row.action, row.actor_id, row.actor_label[:4]) == ("setup.token_issued", None, "cli:")
    assert row.details == {"expires_at": (T0 + accounts.SETUP_TOKEN_LIFETIME).isoformat()}
    assert issued.token not in repr(row.details)


def test_a_new_migrate_run_replaces_the_token_and_an_old_one_expires(db: MigratedDatabase) -> None:
    first = issue(db)
    second = issue(db, T0 + STEP)
    assert first is not None and second is not None and first.token != second.token
    assert "not the setup token" in (setup(db, first.token).error or "")
    late = T0 + STEP + accounts.SETUP_TOKEN_LIFETIME
    assert "expired" in (setup(db, second.token, now=late).error or "")


def test_wrong_setup_tokens_lock_the_setup(db: MigratedDatabase) -> None:
    issued = issue(db)
    assert issued is not None
    for _ in range(5):
        setup(db, "guess")
    assert "Too many wrong setup tokens" in (setup(db, issued.token).error or "")
    assert setup(db, issued.token, now=T0 + accounts.LOCKOUT_PERIOD + STEP).ok
    actions = [row.action for row in audit_rows(db)]
    assert actions.count("setup.failed") == 5 and actions.count("setup.locked") == 1


def test_setup_without_a_token_says_how_to_get_one(db: MigratedDatabase) -> None:
    assert "Run 'python -m core migrate'" in (setup(db, "anything").error or "")


# --- nothing secret in the audit trail -------------------------------------------------------


def test_no_password_hash_secret_code_or_token_reaches_the_audit_log(
    db: MigratedDatabase, box: SecretBox
) -> None:
    issued = issue(db)
    assert issued is not None
    setup(db, "wrong-token-guess")
    user_id = setup(db, issued.token).user_id
    assert user_id is not None
    secret = accounts.new_totp_secret()
    totp = pyotp.TOTP(secret)
    actor = Actor(label="ada", user_id=user_id, ip_address="198.51.100.1")
    with db.session() as session, session.begin():
        accounts.confirm_enrolment(session, actor, box, secret, totp.at(T0), T0)
    attempt(db, "wrong password!", T0 + STEP)
    attempt(db, PASSWORD, T0 + STEP)
    code_attempt(db, box, user_id, totp.at(T0 + STEP), T0 + STEP)
    code_attempt(db, box, user_id, "000000", T0 + STEP)
    with db.session() as session, session.begin():
        accounts.change_password(session, actor, PASSWORD, "another long password", T0 + 2 * STEP)
        password_hash = session.get(User, user_id).password_hash  # type: ignore[union-attr]
    with db.session() as session:
        dump = repr(session.execute(text("SELECT * FROM admin_action_logs")).all())
    for secret_text in (
        issued.token,
        "wrong-token-guess",
        PASSWORD,
        "another long password",
        "wrong password!",
        password_hash,
        secret,
        totp.at(T0),
    ):
        assert secret_text not in dump


# --- the cookie key --------------------------------------------------------------------------


def test_the_cookie_key_is_required_in_production_and_derived_in_development(
    tmp_path, fernet_key: str
) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ConfigError, match="AI_CONSOLE_COOKIE_KEY is required"):
        accounts.cookie_key(Settings(database_url=url, fernet_keys=(fernet_key,), env="production"))
    explicit = "k" * 40
    assert accounts.cookie_key(Settings(database_url=url, cookie_key=explicit)) == explicit
    with pytest.raises(ConfigError, match="at least 32 characters"):
        Settings(database_url=url, cookie_key="short")

    dev = Settings(database_url=url, data_dir=tmp_path / "data")
    derived = accounts.cookie_key(dev)
    assert (tmp_path / "data" / "fernet.key").exists()  # made on first run, like migrate does
    assert derived == accounts.cookie_key(dev) and len(derived) == 64
    assert derived not in (tmp_path / "data" / "fernet.key").read_text()
    assert accounts.cookie_key(Settings(database_url=url, fernet_keys=(fernet_key,))) != derived
