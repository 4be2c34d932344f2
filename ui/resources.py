"""One of each per process: settings, the engine, the session factory, the cipher and a usage
writer; and whether the database is ready (migrated) for the console."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core import accounts
from core.alerts import AlertWatcher, Outbox
from core.config import ConfigError, Settings
from core.crypto import SecretBox, load_cipher
from core.db import make_engine, make_session_factory, schema_status, session_scope
from core.models import utcnow
from core.periodic import Periodic
from core.quota.ledger import QuotaLedger
from core.usage.retention import apply_retention
from core.usage.writer import UsageWriter


@st.cache_resource
def settings() -> Settings:
    return Settings.from_env()


@st.cache_resource
def engine() -> Engine:
    return make_engine(settings())


@st.cache_resource
def session_factory() -> sessionmaker[Session]:
    return make_session_factory(engine())


@st.cache_resource
def cipher() -> SecretBox:
    return load_cipher(settings())


@st.cache_resource
def cookie_key() -> str:
    return accounts.cookie_key(settings())


@st.cache_resource
def usage_writer() -> UsageWriter:
    """The console routes no calls, but its writer's thread stores the spooled usage rows of
    backend processes that ended before their writers could (a crash, a SIGKILL, a database
    that was away at shutdown) and releases expired quota holds, even if no router of that
    database ever starts again."""
    return UsageWriter(engine(), QuotaLedger(engine()), settings().usage_spool_dir)


@st.cache_resource
def outbox() -> Outbox:
    """How alerts leave this console (webhooks, Slack, email), for the Alerts page's tests."""
    return Outbox.from_settings(settings(), cipher())


@st.cache_resource
def alert_watcher() -> AlertWatcher:
    """Claims and sends the alerts that are due, every AI_CONSOLE_ALERT_INTERVAL_S, on a
    thread of its own. Every console replica runs one; the database decides who sends what."""
    return AlertWatcher(session_factory(), outbox(), settings().alert_interval_s).start()


RETENTION_EVERY_S = 3600.0


@st.cache_resource
def usage_retention() -> Periodic | None:
    """Prunes raw usage rows older than AI_CONSOLE_USAGE_RETENTION_DAYS once an hour, on a
    thread of its own (None when it is unset: every row is kept). Every replica may run it:
    a prune that finds nothing older does nothing."""
    if settings().usage_retention_days is None:
        return None
    return Periodic(
        "usage-retention",
        RETENTION_EVERY_S,
        lambda: apply_retention(engine(), settings(), utcnow()),
    ).start()


@contextmanager
def transaction() -> Iterator[Session]:
    """A fresh Session for one unit of work: committed on success, rolled back on error."""
    with session_scope(session_factory()) as session:
        yield session


def startup_problem() -> str | None:
    """What the operator must fix before anyone can use the console (settings, schema), or None."""
    try:
        _ready()
    except ConfigError as exc:
        return f"The console is not configured: {exc}."
    except _NotMigrated as exc:
        return str(exc)
    return None


class _NotMigrated(Exception):
    pass


@st.cache_resource
def _ready() -> None:
    # Cached once it passes (a raised exception is not cached), so a healthy console does not
    # read the migrations folder on every rerun.
    cipher()
    cookie_key()
    status = schema_status(engine())
    if not status.up_to_date:
        raise _NotMigrated(
            f"The database schema is at {status.current or 'nothing'} but this version needs "
            f"{status.head}. Run `python -m core migrate` (or `make run`) and reload."
        )
    usage_writer()
    alert_watcher()
    usage_retention()


def needs_setup() -> bool:
    with transaction() as session:
        return accounts.needs_setup(session)
