"""Usage retention: a one-row watermark below which raw usage rows have been pruned, and
rollup triggers that keep a pruned row's sums.

Revision ID: 8d4f2b6e1a37
Revises: 9a4c6e2b7d15
Create Date: 2026-12-07 03:50:00

`ai_provider_usage_retention` holds at most one row (id 1): `pruned_before`, a UTC midnight
that only moves forward (core/usage/retention.py). The DELETE trigger of the usage table is
made again from this revision's ROLLUPS (`retained()`): a deleted row created before the
watermark is no longer subtracted, so pruning raw rows leaves the hourly and daily sums as they
were. Rows after it (a demo purge of recent rows, a delete by hand) still subtract. The insert
and update triggers are made again unchanged. No table is rebuilt and no row is touched.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rollup_triggers import FIRST

revision: str = "8d4f2b6e1a37"
down_revision: str | Sequence[str] | None = "9a4c6e2b7d15"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rollups as 5a7c2e9d1f03 made them, then with the watermark on DELETE.
BEFORE = FIRST.plus(
    "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "cache_savings_micro_usd"
).keyed("service", "tags")
AFTER = BEFORE.retained()


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "ai_provider_usage_retention",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("pruned_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_ai_provider_usage_retention_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_provider_usage_retention")),
    )
    BEFORE.drop(postgres)
    AFTER.create(postgres)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    AFTER.drop(postgres)
    BEFORE.create(postgres)
    op.drop_table("ai_provider_usage_retention")
