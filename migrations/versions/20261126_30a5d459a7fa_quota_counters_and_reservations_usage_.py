"""Quota counters and reservations; usage rows say where they came from; user_id is opaque.

Revision ID: 30a5d459a7fa
Revises: 847acc5a668e
Create Date: 2026-11-26 14:17:57.450687

usage_logs.user_id is the calling service's own user id, not a console user, so its foreign key
to users goes (and it widens to BIGINT). On SQLite the usage table is rebuilt by batch mode; it
has no triggers to lose.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "30a5d459a7fa"
down_revision: str | Sequence[str] | None = "847acc5a668e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ai_provider_quota_counters",
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("used_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "reserved_tokens >= 0", name=op.f("ck_ai_provider_quota_counters_reserved_non_negative")
        ),
        sa.CheckConstraint(
            "used_tokens >= 0", name=op.f("ck_ai_provider_quota_counters_used_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["config_id"],
            ["ai_provider_configs.id"],
            name=op.f("fk_ai_provider_quota_counters_config_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("config_id", "day", name=op.f("pk_ai_provider_quota_counters")),
    )
    op.create_table(
        "ai_provider_quota_reservations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "tokens > 0", name=op.f("ck_ai_provider_quota_reservations_tokens_positive")
        ),
        sa.ForeignKeyConstraint(
            ["config_id"],
            ["ai_provider_configs.id"],
            name=op.f("fk_ai_provider_quota_reservations_config_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_provider_quota_reservations")),
    )
    op.create_index(
        op.f("ix_ai_provider_quota_reservations_config_id"),
        "ai_provider_quota_reservations",
        ["config_id"],
    )
    op.create_index(
        op.f("ix_ai_provider_quota_reservations_expires_at"),
        "ai_provider_quota_reservations",
        ["expires_at"],
    )

    with op.batch_alter_table("ai_provider_usage_logs") as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), server_default="router", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_ai_provider_usage_logs_source"), "source IN ('router', 'legacy_env')"
        )
        batch_op.alter_column(
            "user_id", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True
        )
        batch_op.drop_constraint(op.f("fk_ai_provider_usage_logs_user_id"), type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("ai_provider_usage_logs") as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_ai_provider_usage_logs_user_id"),
            "users",
            ["user_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.alter_column(
            "user_id", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True
        )
        batch_op.drop_constraint(op.f("ck_ai_provider_usage_logs_source"), type_="check")
        batch_op.drop_column("source")
    op.drop_table("ai_provider_quota_reservations")
    op.drop_table("ai_provider_quota_counters")
