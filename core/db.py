"""Engine, sessions and schema migrations.

One engine per process: `make_engine` builds it, the caller caches it (the console with
st.cache_resource, services inside their Router). SQLite runs in WAL mode with foreign keys on
and real transactions; PostgreSQL goes through psycopg 3 with a bounded, pre-pinged pool.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.config import PROJECT_ROOT, Settings

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000

# What a database that is down, restarting, frozen or locked raises (as opposed to refusing a
# statement or a bug): the callers that can go on without it catch these.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    TimeoutError,
)


def failure_reason(error: BaseException) -> str:
    """A database error's driver class and first line, for logs and messages. Statement
    parameters never appear in it (engines are made with hide_parameters)."""
    original = getattr(error, "orig", None) or error
    first_line = (str(original).strip().splitlines() or [""])[0][:200]
    name = type(original).__name__
    return f"{name}: {first_line}" if first_line else name


def make_engine(settings: Settings, *, statement_timeout: bool = False) -> Engine:
    """Build the engine for `settings.database_url` (creating a SQLite file's folder).

    A PostgreSQL connection attempt gives up after `settings.db_connect_timeout_s`; with
    `statement_timeout` (the routing path's engine) the server also cancels any statement that
    runs longer than `settings.db_statement_timeout_s`. The console and the CLI have no
    statement timeout: a report or a migration may rightly take longer.

    Statement parameters never appear in exceptions or logs (`hide_parameters`): they can hold
    ciphertext, password hashes or whatever a user typed. A SQLite file, its folder and its
    -wal/-shm files are readable by the owner only, whatever the umask.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            database = Path(url.database)
            if database.parent.resolve() == settings.data_dir.resolve():
                private_dir(settings.data_dir, tighten=True)
            private_file(database)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=True
        )
        _configure_sqlite(engine, url.database)
        return engine
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    libpq = settings.db_timeouts.libpq()
    if not statement_timeout:
        del libpq["options"]
    return create_engine(
        url,
        connect_args=libpq,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=True,
    )


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create `path` (and its parents) if missing, the folder itself 0700 whatever the umask.

    An existing folder keeps its mode unless `tighten` (for the console's own data folder: a
    folder someone else chose, /tmp say, must not be changed)."""
    if tighten or not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Create an empty `path` 0600 if missing (SQLite gives its -wal and -shm files the mode of
    the database file), and make an existing one 0600; a missing folder is made private."""
    private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def _configure_sqlite(engine: Engine, database: str | None) -> None:
    # pysqlite's own transaction handling defers BEGIN and skips it around DDL; take control so
    # a transaction means what it says (SQLAlchemy docs, "Serializable isolation / Savepoints").
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        if database and database != ":memory:":
            # Files made before the database file was private (or copied in) keep their mode.
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(database + suffix).chmod(0o600)

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        immediate = conn.get_execution_options().get("sqlite_begin") == "immediate"
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (pages read them after saving)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write after reading. On SQLite it takes the write lock at BEGIN
    (waiting up to the busy timeout): a deferred transaction that read first could not
    upgrade once another process had written, and would fail at once instead of waiting."""
    with engine.connect().execution_options(sqlite_begin="immediate") as conn, conn.begin():
        yield conn


@contextmanager
def session_scope(factory: sessionmaker[Session], *, immediate: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception.

    `immediate`: on SQLite, take the write lock at BEGIN, like `write_transaction`, for a unit
    that reads and then writes everything in one transaction (`keys rotate`). Without it such a
    unit is refused at once ("database is locked", SQLite's busy snapshot) if a router's usage
    writer committed in between. (Not the default: a unit that records a refusal in a
    transaction of its own while it is open would then wait on itself.)"""
    bind = factory.kw["bind"]
    if immediate:
        bind = bind.execution_options(sqlite_begin="immediate")
    with factory(bind=bind) as session, session.begin():
        yield session


# --- migrations -------------------------------------------------------------------------------


def alembic_config(engine: Engine) -> Config:
    """An Alembic config that migrates through `engine` (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Revert migrations down to `revision`."""
    command.downgrade(alembic_config(engine), revision)


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def schema_status(engine: Engine) -> SchemaStatus:
    """The database's migration revision against the newest one in migrations/."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None, "migrations/versions holds no revision"
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return SchemaStatus(current=current, head=head)
