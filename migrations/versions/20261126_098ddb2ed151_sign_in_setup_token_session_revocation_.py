"""Sign-in: the first-run setup token, session revocation, last sign-in, audit-by-actor index.

Revision ID: 098ddb2ed151
Revises: 30a5d459a7fa
Create Date: 2026-11-26 14:13:26.523907

Hand-checked: server defaults are portable (sa.func.now()), and on SQLite nothing here rebuilds a
table (recreate="never"): a rebuild of admin_action_logs would drop its append-only triggers, and
a rebuild of users would fire the foreign keys that point at it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "098ddb2ed151"
down_revision: str | Sequence[str] | None = "30a5d459a7fa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "setup_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "failed_attempts >= 0", name=op.f("ck_setup_tokens_failed_attempts_non_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_setup_tokens")),
    )
    with op.batch_alter_table("admin_action_logs", recreate="never") as batch_op:
        batch_op.create_index(
            "ix_admin_action_logs_label_created", ["actor_label", "created_at"], unique=False
        )
    with op.batch_alter_table("users", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("sessions_revoked_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("users", recreate="never") as batch_op:
        batch_op.drop_column("sessions_revoked_at")
        batch_op.drop_column("last_login_at")
    with op.batch_alter_table("admin_action_logs", recreate="never") as batch_op:
        batch_op.drop_index("ix_admin_action_logs_label_created")
    op.drop_table("setup_tokens")
