"""The operator's side of accounts: `migrate` prints the first-run setup token while no user
exists (and audits its issuance), `users add` creates accounts with the password from a prompt
or standard input, and `users unlock` / `users reset-mfa` help someone who cannot sign in."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from contextlib import redirect_stdout

import pytest
from sqlalchemy import select

from core import accounts
from core.access import Actor
from core.accounts import rules
from core.cli import main
from core.config import PROJECT_ROOT
from core.crypto import load_cipher
from core.models import AdminActionLog, User
from tests.support.database import MigratedDatabase

PASSWORD = "correct horse battery"


def cli(db: MigratedDatabase, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "AI_CONSOLE_DATABASE_URL": db.url,
        "AI_CONSOLE_FERNET_KEYS": db.settings.fernet_keys[0],
        "AI_CONSOLE_DATA_DIR": str(db.settings.data_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=PROJECT_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def printed_token(output: str) -> str:
    match = re.search(r"setup token to create the first super-admin:\n\n    (\S+)\n", output)
    assert match, output
    return match.group(1)


def test_migrate_prints_a_setup_token_until_the_first_user_exists(db: MigratedDatabase) -> None:
    first = cli(db, "migrate")  # the real command, as `make run` runs it
    assert first.returncode == 0, first.stderr
    old_token = printed_token(first.stdout)
    assert "It works once, until" in first.stdout and old_token not in first.stderr

    token = printed_token(in_process(db, "migrate"))
    assert token != old_token  # a new run replaces it
    with db.session() as session, session.begin():
        stale = accounts.complete_setup(
            session, old_token, "root", PASSWORD, Actor(label="anonymous")
        )
    assert not stale.ok
    with db.session() as session, session.begin():
        done = accounts.complete_setup(session, token, "root", PASSWORD, Actor(label="anonymous"))
    assert done.ok
    assert "setup token" not in in_process(db, "migrate")
    with db.session() as session:
        issued = session.scalars(
            select(AdminActionLog)
            .where(AdminActionLog.action == "setup.token_issued")
            .order_by(AdminActionLog.id)
        ).all()
    assert len(issued) == 2  # one per migrate run that printed a token
    for row in issued:
        assert row.actor_label.startswith("cli:") and row.actor_id is None
        assert set(row.details) == {"expires_at"}
        assert old_token not in str(row.details) and token not in str(row.details)


def in_process(db: MigratedDatabase, *args: str, stdin: str = "", code: int = 0) -> str:
    """`python -m core ARGS` run in this process (fast); returns stdout, or stderr on failure."""
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(io.StringIO()) as out:
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        patch.setattr(rules, "BCRYPT_ROUNDS", 4)
        err = io.StringIO()
        patch.setattr(sys, "stderr", err)
        try:
            assert main(list(args), settings=db.settings) == code
        except SystemExit as exit_:  # argparse's usage errors
            assert exit_.code == code
    return out.getvalue() if code == 0 else err.getvalue()


def test_users_add_reads_the_password_from_stdin(db: MigratedDatabase) -> None:
    printed = in_process(db, "users", "add", "Root", "--role", "super_admin", stdin=PASSWORD + "\n")
    assert printed.strip() == (
        "Added root (super_admin). They must set up an authenticator app at their first sign-in."
    )
    with db.session() as session:
        user = session.scalars(select(User)).one()
        assert accounts.verify_password(PASSWORD, user.password_hash)
        row = session.scalars(select(AdminActionLog)).one()
    assert (row.action, row.actor_label[:4], row.details) == (
        "user.created",
        "cli:",
        {"username": "root", "role": "super_admin"},
    )

    taken = in_process(db, "users", "add", "root", "--role", "analyst", stdin=PASSWORD, code=1)
    assert taken.strip().splitlines() == ["error: The username 'root' is taken."]
    weak = in_process(db, "users", "add", "ann", "--role", "analyst", stdin="short\n", code=1)
    assert "at least 12 characters" in weak and "short" not in weak.replace("at least", "")
    guessable = in_process(
        db, "users", "add", "alice", "--role", "analyst", stdin="alice-console-2026\n", code=1
    )
    assert guessable.strip().splitlines() == [
        "error: The password contains your username, name or email address, which is the first "
        "thing an attacker tries. Choose one without them."
    ]
    common = in_process(
        db, "users", "add", "ann", "--role", "analyst", stdin="password1234\n", code=1
    )
    assert "This is a very common password" in common and "password1234" not in common
    named = in_process(
        db,
        "users",
        "add",
        "ann",
        "--role",
        "analyst",
        "--display-name",
        "Ann Quintanilla",
        stdin="quintanilla-lovely-77\n",
        code=1,
    )
    assert "contains your username, name or email" in named
    bad_email = in_process(
        db, "users", "add", "ann", "--role", "analyst", "--email", "ann@", stdin=PASSWORD, code=1
    )
    assert bad_email.startswith("error: Enter an email address like name@example.com")
    with db.session() as session:
        assert session.scalars(select(User.username)).all() == ["root"]
    bad_role = in_process(db, "users", "add", "ann", "--role", "owner", code=2)
    assert "invalid choice: 'owner'" in bad_role


def test_users_unlock_and_reset_mfa_are_audited_as_the_operator(db: MigratedDatabase) -> None:
    box = load_cipher(db.settings)
    with db.session() as session:
        bob = User(
            username="bob",
            password_hash=accounts.hash_password(PASSWORD, rounds=4),
            role="super_admin",
            totp_secret_encrypted=box.encrypt(accounts.new_totp_secret()),
        )
        session.add(bob)
        session.commit()
    guesser = Actor(label="anonymous", ip_address="198.51.100.66")
    for _ in range(accounts.ACCOUNT_FREE_FAILURES + 1):
        with db.session() as session, session.begin():
            accounts.check_password(session, "bob", "not bob's password", guesser)
    with db.session() as session:
        assert accounts.account_throttles(session, ["bob"])["bob"].until is not None

    unlocked = in_process(db, "users", "unlock", "Bob")
    assert unlocked.strip() == "Unlocked bob: its failed sign-ins and codes are forgotten."
    reset = in_process(db, "users", "reset-mfa", "bob")
    assert reset.startswith("Reset the authenticator app of bob:")
    with db.session() as session:
        assert accounts.account_throttles(session, ["bob"]) == {}
        user = session.scalars(select(User)).one()
        assert user.totp_secret_encrypted is None and user.sessions_revoked_at is not None
        rows = session.scalars(
            select(AdminActionLog)
            .where(AdminActionLog.action.like("user.%"))
            .order_by(AdminActionLog.id)
        ).all()
    assert [(r.action, r.actor_label[:4], r.actor_id, r.target_id, r.details) for r in rows] == [
        ("user.unlocked", "cli:", None, str(user.id), {"username": "bob"}),
        ("user.mfa_reset", "cli:", None, str(user.id), {"username": "bob"}),
    ]

    for command in ("unlock", "reset-mfa"):
        unknown = in_process(db, "users", command, "nobody", code=1)
        assert unknown.splitlines() == ["error: There is no user 'nobody'."]
    garbled = in_process(db, "users", "unlock", "bo\x01b", code=1)
    assert garbled.splitlines() == [f"error: The username {accounts.NO_CONTROL_CHARACTERS}"]


def test_the_real_command_unlocks_by_name(db: MigratedDatabase) -> None:
    in_process(db, "users", "add", "carol", "--role", "analyst", stdin=PASSWORD)
    done = cli(db, "users", "unlock", "carol")
    assert done.returncode == 0, done.stderr
    missing = cli(db, "users", "reset-mfa", "nobody")
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == ["error: There is no user 'nobody'."]
