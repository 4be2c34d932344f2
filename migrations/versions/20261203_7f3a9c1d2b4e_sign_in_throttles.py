"""Sign-in throttles (replacing the per-account lock) and the sign-in cookies already resumed.

Revision ID: 7f3a9c1d2b4e
Revises: c4d5e6f7a8b9
Create Date: 2026-12-03 09:00:00

Hand-checked: server defaults are portable (sa.func.now()); nothing here rebuilds an existing
table on SQLite. users.failed_logins and users.locked_until stay (unused): dropping them would
rebuild `users` on SQLite (its CHECK constraint names failed_logins), and that rebuild fires the
foreign keys that point at it. Any lock still in force is lifted, since nothing reads it now.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7f3a9c1d2b4e"
down_revision: str | Sequence[str] | None = "c4d5e6f7a8b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "sign_in_throttles",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("account_key", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=45), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "scope IN ('account_address', 'address', 'code')",
            name=op.f("ck_sign_in_throttles_scope"),
        ),
        sa.CheckConstraint(
            "failures >= 0", name=op.f("ck_sign_in_throttles_failures_non_negative")
        ),
        sa.PrimaryKeyConstraint(
            "scope", "account_key", "address", name=op.f("pk_sign_in_throttles")
        ),
    )
    op.create_index(
        op.f("ix_sign_in_throttles_last_failure_at"),
        "sign_in_throttles",
        ["last_failure_at"],
        unique=False,
    )
    op.create_table(
        "resumed_sign_ins",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "first_resumed_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_resumed_sign_ins_user_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "issued_at", name=op.f("pk_resumed_sign_ins")),
    )
    op.execute("UPDATE users SET failed_logins = 0, locked_until = NULL")


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("resumed_sign_ins")
    op.drop_index(op.f("ix_sign_in_throttles_last_failure_at"), table_name="sign_in_throttles")
    op.drop_table("sign_in_throttles")
