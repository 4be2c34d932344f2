"""The test databases: throwaway PostgreSQL databases and the migrated database a test gets."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from core.config import Settings
from core.db import make_session_factory

BACKENDS = ("sqlite", "postgresql")
PG_PREFIX = "aic_test_"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where nothing may skip."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


# --- PostgreSQL: one database per test run -------------------------------------------------


class PostgresServer:
    """Creates and drops throwaway databases next to TEST_DATABASE_URL's database."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")

    def create(self) -> str:
        name = f"{PG_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def drop_leftovers(self) -> None:
        """Drop databases of earlier runs whose process is gone (a crash leaves them behind)."""
        with self.admin.connect() as conn:
            names = conn.scalars(
                text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                {"p": f"{PG_PREFIX}%"},
            ).all()
        for name in names:
            pid = name.removeprefix(PG_PREFIX).split("_")[0]
            if pid.isdigit() and not _alive(int(pid)):
                self.drop(self.url.set(database=name).render_as_string(hide_password=False))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class MigratedDatabase:
    """A migrated, empty database on one backend, with settings pointing at it."""

    backend: str
    url: str
    engine: Engine
    settings: Settings

    def session(self) -> Session:
        return make_session_factory(self.engine)()
