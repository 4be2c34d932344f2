"""Usage rollups (hourly and daily, with latency histograms) kept by triggers; a 'demo' source.

Revision ID: 215e8de742e8
Revises: 098ddb2ed151
Create Date: 2026-11-26 14:31:46.644539

ai_provider_usage_hourly and ai_provider_usage_daily hold, per UTC hour or day and per
(provider_type, config_id, model_name, task_type, status, source), the sums of the usage rows
and a fixed-bucket latency histogram. Triggers on ai_provider_usage_logs keep them equal to the
raw rows in the same transaction as every INSERT, UPDATE (a deleted config's SET NULL too) and
DELETE, whatever the order or age of the rows:

- PostgreSQL: statement-level triggers with transition tables, so a batch or a COPY is folded
  in with one aggregated upsert per statement; TRUNCATE empties the rollups.
- SQLite: row-level triggers (SQLite has no statement-level ones) doing the same upserts.

Their SQL is made by migrations/rollup_triggers.py from this revision's ROLLUPS.

The existing rows are summed into the rollups at the end of the upgrade (under the triggers'
lock, so no row is missed or counted twice).

Hand-checked: server defaults are portable; on SQLite only ai_provider_usage_logs is rebuilt by
batch mode (for its source CHECK), before its triggers exist. A later migration that rebuilds
that table on SQLite drops these triggers and must create them again
(tests/test_usage_rollup.py fails if they are missing). The bucket bounds in
rollup_triggers.FIRST are a frozen copy of core.models.LATENCY_BUCKETS_MS.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rollup_triggers import FIRST

revision: str = "215e8de742e8"
down_revision: str | Sequence[str] | None = "098ddb2ed151"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE = "ai_provider_usage_logs"
HOURLY = "ai_provider_usage_hourly"
DAILY = "ai_provider_usage_daily"
LAT = FIRST.latency
KEY = ("provider_type", "config_id", "model_name", "task_type", "status", "source")
ROLLUPS = FIRST  # this revision's sums and bounds (rollup_triggers.py)
OLD_SOURCES = "source IN ('router', 'legacy_env')"
NEW_SOURCES = "source IN ('router', 'legacy_env', 'demo')"


def _rollup_table(name: str, period: sa.Column) -> None:
    op.create_table(
        name,
        period,
        sa.Column("provider_type", sa.String(length=16), nullable=False),
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("task_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("priced_calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost_micro_usd", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("latency_ms_sum", sa.BigInteger(), server_default="0", nullable=False),
        *(sa.Column(c, sa.Integer(), server_default="0", nullable=False) for c in LAT),
        sa.PrimaryKeyConstraint(period.name, *KEY, name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table(USAGE) as batch_op:
        batch_op.drop_constraint(op.f("ck_ai_provider_usage_logs_source"), type_="check")
        batch_op.create_check_constraint(op.f("ck_ai_provider_usage_logs_source"), NEW_SOURCES)
    _rollup_table(HOURLY, sa.Column("hour", sa.DateTime(timezone=True), nullable=False))
    _rollup_table(DAILY, sa.Column("day", sa.Date(), nullable=False))
    ROLLUPS.create(postgres)
    ROLLUPS.backfill(postgres)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    ROLLUPS.drop(postgres)
    op.drop_table(HOURLY)
    op.drop_table(DAILY)
    op.execute(f"DELETE FROM {USAGE} WHERE source = 'demo'")  # noqa: S608 (constants only)
    with op.batch_alter_table(USAGE) as batch_op:
        batch_op.drop_constraint(op.f("ck_ai_provider_usage_logs_source"), type_="check")
        batch_op.create_check_constraint(op.f("ck_ai_provider_usage_logs_source"), OLD_SOURCES)
