"""What every command shares: its signature, its one-line error, the flag that names each
field in a refusal, and a database that must be migrated first."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from core.config import Settings
from core.db import make_engine, schema_status

# The flag that sets each field the core services name in their refusals.
FLAGS = {
    "provider_type": "--type",
    "model_name": "--model",
    "display_name": "--name",
    "api_key": "--api-key-env",
    "description": "--description",
    "base_url": "--base-url",
    "tasks": "--tasks",
    "priority": "--priority",
    "daily_token_limit": "--daily-limit",
    "monthly_token_limit": "--monthly-limit",
    "daily_budget_usd": "--daily-budget-usd",
    "monthly_budget_usd": "--monthly-budget-usd",
    # alerts add
    "target": "--webhook/--email",
    "config_id": "--config",
    "limit_kinds": "--limits",
    "thresholds": "--threshold",
    "error_rate_percent": "--error-rate",
    "error_min_calls": "--min-calls",
}


class CliError(Exception):
    """A failure the operator can act on; printed as one line."""


def migrated_engine(settings: Settings) -> Engine:
    engine = make_engine(settings)
    status = schema_status(engine)
    if not status.up_to_date:
        raise CliError(
            f"database schema is at {status.current or 'nothing'}, this code needs "
            f"{status.head}: run `python -m core migrate` first"
        )
    return engine


def safe_url(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


Command = Callable[[Settings, argparse.Namespace], None]
