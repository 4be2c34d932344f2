"""Initial schema: users, provider configs, usage logs, append-only admin action log.

Revision ID: 847acc5a668e
Revises:
Create Date: 2026-11-26 14:00:49.377109

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "847acc5a668e"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("display_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("totp_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("role IN ('super_admin', 'analyst')", name=op.f("ck_users_role")),
        sa.CheckConstraint("failed_logins >= 0", name=op.f("ck_users_failed_logins_non_negative")),
        sa.CheckConstraint("length(username) > 0", name=op.f("ck_users_username_not_empty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "admin_action_logs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_label", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=50), nullable=True),
        sa.Column("target_id", sa.String(length=100), nullable=True),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "actor_id IS NOT NULL OR actor_label <> ''",
            name=op.f("ck_admin_action_logs_actor_known"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_admin_action_logs_actor_id")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_action_logs")),
    )
    with op.batch_alter_table("admin_action_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_admin_action_logs_action_created", ["action", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_admin_action_logs_actor_created", ["actor_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_admin_action_logs_created_at"), ["created_at"], unique=False
        )
    _make_audit_log_append_only()

    op.create_table(
        "ai_provider_configs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_type", sa.String(length=16), nullable=False),
        sa.Column("api_key_encrypted", sa.Text(), nullable=False),
        sa.Column("key_last4", sa.String(length=4), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("is_default", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "default_for_extraction", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column("default_for_cv_draft", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "default_for_cover_letter", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column(
            "default_for_validation", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column("priority", sa.Integer(), server_default="100", nullable=False),
        sa.Column("daily_token_limit", sa.BigInteger(), nullable=True),
        sa.Column("monthly_token_limit", sa.BigInteger(), nullable=True),
        sa.Column("last_tested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_test_success", sa.Boolean(), nullable=True),
        sa.Column("last_test_message", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.CheckConstraint(
            "provider_type IN ('gemini', 'openai', 'claude')",
            name=op.f("ck_ai_provider_configs_provider_type"),
        ),
        sa.CheckConstraint(
            "daily_token_limit IS NULL OR daily_token_limit >= 0",
            name=op.f("ck_ai_provider_configs_daily_limit_non_negative"),
        ),
        sa.CheckConstraint(
            "length(api_key_encrypted) > 0", name=op.f("ck_ai_provider_configs_api_key_not_empty")
        ),
        sa.CheckConstraint(
            "length(model_name) > 0", name=op.f("ck_ai_provider_configs_model_name_not_empty")
        ),
        sa.CheckConstraint(
            "monthly_token_limit IS NULL OR monthly_token_limit >= 0",
            name=op.f("ck_ai_provider_configs_monthly_limit_non_negative"),
        ),
        sa.CheckConstraint(
            "priority >= 0", name=op.f("ck_ai_provider_configs_priority_non_negative")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_ai_provider_configs_version_positive")),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_ai_provider_configs_created_by_id"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_provider_configs")),
    )
    with op.batch_alter_table("ai_provider_configs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ai_provider_configs_active_priority", ["is_active", "priority", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ai_provider_configs_created_by_id"), ["created_by_id"], unique=False
        )
        batch_op.create_index(
            "uq_ai_provider_configs_single_default",
            ["is_default"],
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )

    op.create_table(
        "ai_provider_usage_logs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("provider_config_id", sa.Integer(), nullable=True),
        sa.Column("provider_type", sa.String(length=16), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("task_type", sa.String(length=32), nullable=False),
        sa.Column("input_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost_micro_usd", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_type", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "provider_type IN ('gemini', 'openai', 'claude')",
            name=op.f("ck_ai_provider_usage_logs_provider_type"),
        ),
        sa.CheckConstraint(
            "status IN ('success', 'error', 'timeout', 'rejected')",
            name=op.f("ck_ai_provider_usage_logs_status"),
        ),
        sa.CheckConstraint(
            "task_type IN ('extraction', 'cv_draft', 'cover_letter', 'validation')",
            name=op.f("ck_ai_provider_usage_logs_task_type"),
        ),
        sa.CheckConstraint(
            "cost_micro_usd IS NULL OR cost_micro_usd >= 0",
            name=op.f("ck_ai_provider_usage_logs_cost_non_negative"),
        ),
        sa.CheckConstraint(
            "input_tokens >= 0 AND output_tokens >= 0 AND total_tokens >= 0",
            name=op.f("ck_ai_provider_usage_logs_tokens_non_negative"),
        ),
        sa.CheckConstraint(
            "latency_ms >= 0", name=op.f("ck_ai_provider_usage_logs_latency_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["provider_config_id"],
            ["ai_provider_configs.id"],
            name=op.f("fk_ai_provider_usage_logs_provider_config_id"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_ai_provider_usage_logs_user_id"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_provider_usage_logs")),
    )
    with op.batch_alter_table("ai_provider_usage_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ai_provider_usage_logs_config_created",
            ["provider_config_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_ai_provider_usage_logs_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            "ix_ai_provider_usage_logs_provider_created",
            ["provider_type", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_ai_provider_usage_logs_task_created", ["task_type", "created_at"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    _drop_audit_log_triggers()
    with op.batch_alter_table("ai_provider_usage_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_ai_provider_usage_logs_task_created")
        batch_op.drop_index("ix_ai_provider_usage_logs_provider_created")
        batch_op.drop_index(batch_op.f("ix_ai_provider_usage_logs_created_at"))
        batch_op.drop_index("ix_ai_provider_usage_logs_config_created")

    op.drop_table("ai_provider_usage_logs")
    with op.batch_alter_table("ai_provider_configs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_ai_provider_configs_single_default",
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )
        batch_op.drop_index(batch_op.f("ix_ai_provider_configs_created_by_id"))
        batch_op.drop_index("ix_ai_provider_configs_active_priority")

    op.drop_table("ai_provider_configs")
    with op.batch_alter_table("admin_action_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_action_logs_created_at"))
        batch_op.drop_index("ix_admin_action_logs_actor_created")
        batch_op.drop_index("ix_admin_action_logs_action_created")

    op.drop_table("admin_action_logs")
    op.drop_table("users")


def _make_audit_log_append_only() -> None:
    """Refuse UPDATE and DELETE on admin_action_logs in the database itself."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION admin_action_logs_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'admin_action_logs is append-only'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER admin_action_logs_append_only BEFORE UPDATE OR DELETE "
            "ON admin_action_logs FOR EACH ROW EXECUTE FUNCTION admin_action_logs_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER admin_action_logs_no_{verb.lower()} BEFORE {verb} "
                "ON admin_action_logs BEGIN "
                "SELECT RAISE(ABORT, 'admin_action_logs is append-only'); END"
            )


def _drop_audit_log_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER admin_action_logs_append_only ON admin_action_logs")
        op.execute("DROP FUNCTION admin_action_logs_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER admin_action_logs_no_{verb}")
