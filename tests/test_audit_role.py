"""The README's least-privilege role for PostgreSQL: it may insert into and read the audit log,
and nothing it does can change or remove a row (the block is run as the README gives it)."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from core.config import PROJECT_ROOT, Settings
from core.db import make_engine, upgrade
from tests.support.database import PostgresServer


def readme_sql() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    (block,) = re.findall(r"```sql\n(.*?)```", readme, flags=re.DOTALL)
    body = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in body.split(";") if statement.strip()]


def test_the_app_role_may_insert_and_read_the_audit_log_but_never_change_it(
    postgres: PostgresServer,
) -> None:
    url = postgres.create()
    role = f"aic_app_{uuid.uuid4().hex[:8]}"
    owner = make_engine(Settings(database_url=url))
    app = None
    try:
        upgrade(owner)
        with owner.begin() as conn:
            me = conn.scalar(text("SELECT current_user"))
            for statement in readme_sql():
                conn.execute(
                    text(
                        statement.replace("console_app", role)
                        .replace("console_owner", me)
                        .replace("PASSWORD '...'", "PASSWORD 'app'")
                    )
                )
        app = create_engine(make_url(url).set(username=role, password="app"))
        with app.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO admin_action_logs (actor_label, action, details) "
                    "VALUES ('cli:test', 'test.inserted', '{}')"
                )
            )
            conn.execute(text("INSERT INTO setup_tokens (token_sha256, expires_at) "
                              "VALUES ('x', now())"))  # fmt: skip
            conn.execute(text("DELETE FROM setup_tokens"))  # other tables: the usual rights
        for statement in (
            "UPDATE admin_action_logs SET action = 'nothing.happened'",
            "DELETE FROM admin_action_logs",
            "TRUNCATE admin_action_logs",
            "DROP TRIGGER admin_action_logs_no_truncate ON admin_action_logs",
        ):
            with app.begin() as conn, pytest.raises(DBAPIError, match=r"permission denied|owner"):
                conn.execute(text(statement))
        with app.connect() as conn:
            assert conn.scalars(text("SELECT action FROM admin_action_logs")).all() == [
                "test.inserted"
            ]
    finally:
        if app is not None:
            app.dispose()
        owner.dispose()
        postgres.drop(url)
        with postgres.admin.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
