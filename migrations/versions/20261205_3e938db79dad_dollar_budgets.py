"""Dollar budgets: configs may have a daily and a monthly budget, and the quota counters and
reservations hold micro-dollars beside tokens.

Revision ID: 3e938db79dad
Revises: 3b8e1f0c6a27
Create Date: 2026-12-05 06:30:00

Money is integer micro-dollars, as on the usage rows (DESIGN.md, Money): SQLite has no decimal
type. Every column comes with its CHECK in one ALTER TABLE ... ADD COLUMN, which both databases
accept, so SQLite rebuilds no table: rebuilding ai_provider_configs would drop the table other
tables' ON DELETE CASCADE keys point at. (Alembic compares neither CHECKs nor this shape.)

The counters' spent money is filled from the daily rollups (the rows the usage writer settled,
source 'router'), so a budget set later in the month already sees what was spent before it, as
token limits do.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3e938db79dad"
down_revision: str | Sequence[str] | None = "3b8e1f0c6a27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (  # table, column, type and default, CHECK name, CHECK
    (
        "ai_provider_configs",
        "daily_budget_micro_usd",
        "BIGINT",
        "ck_ai_provider_configs_daily_budget_non_negative",
        "daily_budget_micro_usd IS NULL OR daily_budget_micro_usd >= 0",
    ),
    (
        "ai_provider_configs",
        "monthly_budget_micro_usd",
        "BIGINT",
        "ck_ai_provider_configs_monthly_budget_non_negative",
        "monthly_budget_micro_usd IS NULL OR monthly_budget_micro_usd >= 0",
    ),
    (
        "ai_provider_quota_counters",
        "used_micro_usd",
        "BIGINT DEFAULT 0 NOT NULL",
        "ck_ai_provider_quota_counters_used_micro_usd_non_negative",
        "used_micro_usd >= 0",
    ),
    (
        "ai_provider_quota_counters",
        "reserved_micro_usd",
        "BIGINT DEFAULT 0 NOT NULL",
        "ck_ai_provider_quota_counters_reserved_micro_usd_non_negative",
        "reserved_micro_usd >= 0",
    ),
    (
        "ai_provider_quota_reservations",
        "micro_usd",
        "BIGINT DEFAULT 0 NOT NULL",
        "ck_ai_provider_quota_reservations_micro_usd_non_negative",
        "micro_usd >= 0",
    ),
)


def upgrade() -> None:
    for table, column, kind, name, check in COLUMNS:
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN {column} {kind} CONSTRAINT {name} CHECK ({check})"
        )
    op.execute("""
        UPDATE ai_provider_quota_counters SET used_micro_usd = (
            SELECT COALESCE(SUM(d.cost_micro_usd), 0) FROM ai_provider_usage_daily d
            WHERE d.config_id = ai_provider_quota_counters.config_id
              AND d.day = ai_provider_quota_counters.day AND d.source = 'router'
        )
    """)


def downgrade() -> None:
    for table, column, *_ in reversed(COLUMNS):  # a column's own CHECK goes with it
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
