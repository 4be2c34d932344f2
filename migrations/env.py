"""Alembic environment: the URL comes from core.config (or an engine handed in by core.db)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Engine

from core.config import Settings
from core.db import make_engine
from core.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our UTCDateTime as the plain type it stores, so migrations never import core."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    return engine if engine is not None else make_engine(Settings.from_env())


def run_migrations() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations()
