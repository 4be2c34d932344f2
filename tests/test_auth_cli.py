"""The operator's side of accounts: `migrate` prints the first-run setup token while no user
exists, and `users add` creates accounts with the password from a prompt or standard input."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from contextlib import redirect_stdout

import pytest
from sqlalchemy import select

from core import auth
from core.__main__ import main
from core.audit import Actor
from core.config import PROJECT_ROOT
from core.models import AdminActionLog, User
from tests.conftest import MigratedDatabase

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
        stale = auth.complete_setup(session, old_token, "root", PASSWORD, Actor(label="anonymous"))
    assert not stale.ok
    with db.session() as session, session.begin():
        done = auth.complete_setup(session, token, "root", PASSWORD, Actor(label="anonymous"))
    assert done.ok
    assert "setup token" not in in_process(db, "migrate")


def in_process(db: MigratedDatabase, *args: str, stdin: str = "", code: int = 0) -> str:
    """`python -m core ARGS` run in this process (fast); returns stdout, or stderr on failure."""
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(io.StringIO()) as out:
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        patch.setattr(auth, "BCRYPT_ROUNDS", 4)
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
        assert auth.verify_password(PASSWORD, user.password_hash)
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
    bad_role = in_process(db, "users", "add", "ann", "--role", "owner", code=2)
    assert "invalid choice: 'owner'" in bad_role
