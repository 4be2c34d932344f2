"""Usage rows say which service a call was for and its tags; the rollups are keyed by both.

Revision ID: 5a7c2e9d1f03
Revises: 3e938db79dad
Create Date: 2026-12-05 15:10:00

`service` and `tags` (core/usage/attribution.py) are NOT NULL with '' for none, so they can be
part of the rollups' primary key (a NULL in a key would make every such row its own group).
Rows already stored are unattributed: '' on the raw rows and on every rollup row, which is what
they add, so the rollups are copied, not rebuilt from the raw rows (raw rows may have been
pruned; the rollups are what keeps those days).

On SQLite the usage table gets its columns by ALTER TABLE ADD COLUMN (no rebuild of what may be
millions of rows); the two rollup tables are rebuilt by batch mode to change their primary key.
The triggers are dropped first (a rebuilt table loses its triggers, and theirs name the rollup
tables) and made again from this revision's ROLLUPS, keyed by service and tags too.
"""

# ruff: noqa: S608 (SQL built from this migration's constants, never input)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rollup_triggers import FIRST

revision: str = "5a7c2e9d1f03"
down_revision: str | Sequence[str] | None = "3e938db79dad"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE = "ai_provider_usage_logs"
ROLLUPS = {"ai_provider_usage_hourly": "hour", "ai_provider_usage_daily": "day"}
OLD_KEY = ("provider_type", "config_id", "model_name", "task_type", "status", "source")
NEW = ("service", "tags")
# The rollups as 3b8e1f0c6a27 made them, then keyed by the new columns too.
BEFORE = FIRST.plus(
    "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "cache_savings_micro_usd"
)
AFTER = BEFORE.keyed(*NEW)


def _columns() -> list[sa.Column[str]]:
    return [
        sa.Column("service", sa.String(64), server_default="", nullable=False),
        sa.Column("tags", sa.String(800), server_default="", nullable=False),
    ]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    BEFORE.drop(postgres)
    for column in _columns():
        op.add_column(USAGE, column)
    for table, period in ROLLUPS.items():
        with op.batch_alter_table(table, recreate="auto") as batch_op:
            for column in _columns():
                batch_op.add_column(column)
            batch_op.drop_constraint(f"pk_{table}", type_="primary")
            batch_op.create_primary_key(f"pk_{table}", [period, *OLD_KEY, *NEW])
    AFTER.create(postgres)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    AFTER.drop(postgres)
    for table, period in ROLLUPS.items():
        # Rows of one old key with different services or tags fold back into one.
        keys = ", ".join((period, *OLD_KEY))
        sums = ", ".join(f"SUM({c}) AS {c}" for c in BEFORE.columns)
        op.execute(
            f"CREATE TABLE {table}_folded AS SELECT {keys}, {sums} FROM {table} GROUP BY {keys}"
        )
        op.execute(f"DELETE FROM {table}")
        with op.batch_alter_table(table, recreate="auto") as batch_op:
            batch_op.drop_constraint(f"pk_{table}", type_="primary")
            for name in reversed(NEW):
                batch_op.drop_column(name)
            batch_op.create_primary_key(f"pk_{table}", [period, *OLD_KEY])
        columns = ", ".join((period, *OLD_KEY, *BEFORE.columns))
        op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_folded")
        op.execute(f"DROP TABLE {table}_folded")
    for name in reversed(NEW):
        if postgres:
            op.drop_column(USAGE, name)
        else:  # SQLite 3.35+ drops a column without rebuilding the table
            op.execute(f"ALTER TABLE {USAGE} DROP COLUMN {name}")
    BEFORE.create(postgres)
