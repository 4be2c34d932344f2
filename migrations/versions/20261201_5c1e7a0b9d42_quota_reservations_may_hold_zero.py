"""Quota reservations may hold zero tokens (a router's lease is drawn down to 0 by its calls),
and on SQLite their ids are never reused (AUTOINCREMENT).

Revision ID: 5c1e7a0b9d42
Revises: 215e8de742e8
Create Date: 2026-12-01 21:40:00

Hand-written (Alembic compares neither CHECK constraints nor AUTOINCREMENT). On SQLite the batch
rebuilds the reservations table, which no trigger or foreign key points at; PostgreSQL's
identity never reused ids.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5c1e7a0b9d42"
down_revision: str | Sequence[str] | None = "215e8de742e8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "ai_provider_quota_reservations"


def upgrade() -> None:
    with op.batch_alter_table(
        TABLE, recreate="auto", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint(op.f("ck_ai_provider_quota_reservations_tokens_positive"), "check")
        batch_op.create_check_constraint(
            op.f("ck_ai_provider_quota_reservations_tokens_non_negative"), "tokens >= 0"
        )


def downgrade() -> None:
    op.execute("DELETE FROM ai_provider_quota_reservations WHERE tokens = 0")  # nothing held
    with op.batch_alter_table(TABLE) as batch_op:
        batch_op.drop_constraint(
            op.f("ck_ai_provider_quota_reservations_tokens_non_negative"), "check"
        )
        batch_op.create_check_constraint(
            op.f("ck_ai_provider_quota_reservations_tokens_positive"), "tokens > 0"
        )
