"""Alerts: rules (where to send which alerts) and deliveries (one per threshold crossed).

Revision ID: 9a4c6e2b7d15
Revises: 5a7c2e9d1f03
Create Date: 2026-12-07 03:40:59

Two new tables, nothing else touched. Hand-checked: server defaults are portable (sa.func.now(),
sa.true()); the unique index on alert_deliveries is the claim that sends each alert once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9a4c6e2b7d15"
down_revision: str | Sequence[str] | None = "5a7c2e9d1f03"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target_encrypted", sa.Text(), nullable=False),
        sa.Column("target_hint", sa.String(length=200), nullable=False),
        sa.Column("config_id", sa.Integer(), nullable=True),
        sa.Column("limit_kinds", sa.String(length=100), server_default="", nullable=False),
        sa.Column("thresholds", sa.String(length=100), server_default="", nullable=False),
        sa.Column("error_rate_percent", sa.Integer(), nullable=True),
        sa.Column("error_min_calls", sa.Integer(), server_default="20", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "channel IN ('webhook', 'slack', 'email')", name=op.f("ck_alert_rules_channel")
        ),
        sa.CheckConstraint(
            "error_min_calls >= 1", name=op.f("ck_alert_rules_error_min_calls_positive")
        ),
        sa.CheckConstraint(
            "error_rate_percent IS NULL OR (error_rate_percent > 0 AND error_rate_percent <= 100)",
            name=op.f("ck_alert_rules_error_rate_percent_range"),
        ),
        sa.CheckConstraint(
            "length(target_encrypted) > 0", name=op.f("ck_alert_rules_target_not_empty")
        ),
        sa.ForeignKeyConstraint(
            ["config_id"],
            ["ai_provider_configs.id"],
            name=op.f("fk_alert_rules_config_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_alert_rules_created_by_id"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_rules_config_id"), ["config_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alert_rules_created_by_id"), ["created_by_id"], unique=False
        )

    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("period", sa.String(length=20), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('tokens_day', 'tokens_month', 'usd_day', 'usd_month', 'error_rate')",
            name=op.f("ck_alert_deliveries_kind"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed', 'superseded')",
            name=op.f("ck_alert_deliveries_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_alert_deliveries_attempts_non_negative")),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name=op.f("fk_alert_deliveries_rule_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
    )
    with op.batch_alter_table("alert_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_alert_deliveries_status_next", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "uq_alert_deliveries_once",
            ["rule_id", "config_id", "kind", "period", "threshold"],
            unique=True,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("alert_deliveries", schema=None) as batch_op:
        batch_op.drop_index("uq_alert_deliveries_once")
        batch_op.drop_index("ix_alert_deliveries_status_next")

    op.drop_table("alert_deliveries")
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_rules_created_by_id"))
        batch_op.drop_index(batch_op.f("ix_alert_rules_config_id"))

    op.drop_table("alert_rules")
