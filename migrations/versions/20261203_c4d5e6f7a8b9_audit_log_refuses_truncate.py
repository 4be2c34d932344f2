"""The audit log refuses TRUNCATE on PostgreSQL, as it already refuses UPDATE and DELETE.

Revision ID: c4d5e6f7a8b9
Revises: 5c1e7a0b9d42
Create Date: 2026-12-03 08:40:00

Hand-written (Alembic does not compare triggers). A row trigger does not fire for TRUNCATE, so
the append-only promise had a hole on PostgreSQL; a statement-level BEFORE TRUNCATE trigger
closes it. SQLite has no TRUNCATE (its `DELETE FROM` without WHERE already hits the row trigger).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c4d5e6f7a8b9"
down_revision: str | Sequence[str] | None = "5c1e7a0b9d42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE TRIGGER admin_action_logs_no_truncate BEFORE TRUNCATE ON admin_action_logs "
        "FOR EACH STATEMENT EXECUTE FUNCTION admin_action_logs_append_only()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER admin_action_logs_no_truncate ON admin_action_logs")
