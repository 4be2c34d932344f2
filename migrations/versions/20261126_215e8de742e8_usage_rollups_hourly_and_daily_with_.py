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

The existing rows are summed into the rollups at the end of the upgrade (under the triggers'
lock, so no row is missed or counted twice).

Hand-checked: server defaults are portable; on SQLite only ai_provider_usage_logs is rebuilt by
batch mode (for its source CHECK), before its triggers exist. A later migration that rebuilds
that table on SQLite drops these triggers and must create them again
(tests/test_usage_rollup.py fails if they are missing). The bucket bounds below are a frozen
copy of core.models.LATENCY_BUCKETS_MS.
"""

# ruff: noqa: S608 (every SQL string here is built from the constants above, never from input)
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "215e8de742e8"
down_revision: str | Sequence[str] | None = "098ddb2ed151"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE = "ai_provider_usage_logs"
HOURLY = "ai_provider_usage_hourly"
DAILY = "ai_provider_usage_daily"
BOUNDS = (
    0, 10, 25, 50, 60, 72, 86, 104, 124, 149, 179, 215, 258, 310, 372, 446, 535, 642, 770, 924,
    1109, 1331, 1597, 1917, 2300, 2760, 3312, 3975, 4770, 5724, 6869, 8242, 9891, 11869, 14243,
    17091, 20509, 24611, 29533, 35440, 42528, 51034, 61240, 73489, 88186, 105824, 126988, 300000,
)  # fmt: skip
LAT = tuple(f"lat_{k:02d}" for k in range(len(BOUNDS)))
KEY = ("provider_type", "config_id", "model_name", "task_type", "status", "source")
SUMS = (
    "calls", "priced_calls", "cost_micro_usd", "input_tokens", "output_tokens", "total_tokens",
    "latency_ms_sum", *LAT,
)  # fmt: skip
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


def _in_bucket(k: int, x: str) -> str:
    """SQL truth value: latency expression `x` falls in histogram bucket k."""
    if k == 0:
        return f"{x} < {BOUNDS[1]}"
    if k == len(BOUNDS) - 1:
        return f"{x} >= {BOUNDS[k]}"
    return f"{x} >= {BOUNDS[k]} AND {x} < {BOUNDS[k + 1]}"


def _columns(period: str) -> str:
    return ", ".join((period, *KEY, *SUMS))


def _add_excluded(alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{c} = {prefix}{c} + excluded.{c}" for c in SUMS)


# --- PostgreSQL: statement-level triggers -------------------------------------------------

_PG_HOUR = "date_trunc('hour', {c} AT TIME ZONE 'UTC')"  # a UTC wall-clock timestamp


def _pg_apply(rows: str) -> str:
    """One statement folding signed usage rows (`rows`: usage columns plus `sign`) into both
    rollups, keys in a fixed order so concurrent writers lock rollup rows in the same order."""
    thresholds = ", ".join(str(b) for b in BOUNDS[1:])
    lat = ",\n        ".join(
        f"COALESCE(SUM(sign) FILTER (WHERE b = {k}), 0) AS {c}" for k, c in enumerate(LAT)
    )
    keys = ", ".join(KEY)
    sums = ", ".join(f"SUM({c})" for c in SUMS)
    return f"""
WITH changed AS ({rows}),
delta AS (
    SELECT {_PG_HOUR.format(c="created_at")} AS hour_utc, provider_type,
        COALESCE(provider_config_id, 0) AS config_id, model_name, task_type, status, source,
        SUM(sign) AS calls,
        SUM(CASE WHEN cost_micro_usd IS NULL THEN 0 ELSE sign END) AS priced_calls,
        SUM(sign * COALESCE(cost_micro_usd, 0)) AS cost_micro_usd,
        SUM(sign * input_tokens) AS input_tokens,
        SUM(sign * output_tokens) AS output_tokens,
        SUM(sign * total_tokens) AS total_tokens,
        SUM(sign * latency_ms) AS latency_ms_sum,
        {lat}
    FROM (SELECT c.*, width_bucket(c.latency_ms, ARRAY[{thresholds}]) AS b FROM changed c) x
    GROUP BY 1, 2, 3, 4, 5, 6, 7
),
hourly AS (
    INSERT INTO {HOURLY} AS r ({_columns("hour")})
    SELECT hour_utc AT TIME ZONE 'UTC', {keys}, {", ".join(SUMS)} FROM delta
    ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (hour, {keys}) DO UPDATE SET {_add_excluded("r")}
    RETURNING 1
)
INSERT INTO {DAILY} AS r ({_columns("day")})
SELECT CAST(hour_utc AS date), {keys}, {sums} FROM delta
GROUP BY 1, 2, 3, 4, 5, 6, 7
ORDER BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (day, {keys}) DO UPDATE SET {_add_excluded("r")}"""


_PG_DROP_EMPTY = f"""
DELETE FROM {HOURLY} WHERE calls = 0 AND hour IN (
    SELECT DISTINCT {_PG_HOUR.format(c="created_at")} AT TIME ZONE 'UTC' FROM old_rows);
DELETE FROM {DAILY} WHERE calls = 0 AND day IN (
    SELECT DISTINCT CAST(created_at AT TIME ZONE 'UTC' AS date) FROM old_rows);"""

_PG_FUNCTIONS = {
    "insert": (_pg_apply("SELECT n.*, 1 AS sign FROM new_rows n") + ";", "NEW TABLE AS new_rows"),
    "delete": (
        _pg_apply("SELECT o.*, -1 AS sign FROM old_rows o") + ";" + _PG_DROP_EMPTY,
        "OLD TABLE AS old_rows",
    ),
    "update": (
        _pg_apply("SELECT n.*, 1 AS sign FROM new_rows n UNION ALL SELECT o.*, -1 FROM old_rows o")
        + ";"
        + _PG_DROP_EMPTY,
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
}


def _pg_create() -> None:
    for event, (body, transition) in _PG_FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION ai_usage_rollup_on_{event}() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$\nBEGIN{body}\nRETURN NULL;\nEND\n$$"
        )
        op.execute(
            f"CREATE TRIGGER ai_usage_rollup_{event} AFTER {event.upper()} ON {USAGE} "
            f"REFERENCING {transition} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION ai_usage_rollup_on_{event}()"
        )
    # DELETE, not TRUNCATE: the rollups may be named in the same TRUNCATE statement.
    op.execute(
        "CREATE FUNCTION ai_usage_rollup_on_truncate() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN DELETE FROM {HOURLY}; DELETE FROM {DAILY}; RETURN NULL; END\n$$"
    )
    op.execute(
        f"CREATE TRIGGER ai_usage_rollup_truncate AFTER TRUNCATE ON {USAGE} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ai_usage_rollup_on_truncate()"
    )


def _pg_drop() -> None:
    for event in ("insert", "delete", "update", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS ai_usage_rollup_{event} ON {USAGE}")
        op.execute(f"DROP FUNCTION IF EXISTS ai_usage_rollup_on_{event}()")


# --- SQLite: row-level triggers -----------------------------------------------------------

_SQLITE_PERIODS = {
    HOURLY: ("hour", "substr({r}.created_at, 1, 13) || ':00:00.000000'"),
    DAILY: ("day", "substr({r}.created_at, 1, 10)"),
}


def _sqlite_values(r: str) -> list[str]:
    x = f"{r}.latency_ms"
    return [
        f"{r}.provider_type", f"COALESCE({r}.provider_config_id, 0)", f"{r}.model_name",
        f"{r}.task_type", f"{r}.status", f"{r}.source",
        "1", f"({r}.cost_micro_usd IS NOT NULL)", f"COALESCE({r}.cost_micro_usd, 0)",
        f"{r}.input_tokens", f"{r}.output_tokens", f"{r}.total_tokens", x,
        *(f"({_in_bucket(k, x)})" for k in range(len(BOUNDS))),
    ]  # fmt: skip


def _sqlite_add(table: str, r: str = "NEW") -> str:
    period, expr = _SQLITE_PERIODS[table]
    values = ", ".join([expr.format(r=r), *_sqlite_values(r)])
    return (
        f"INSERT INTO {table} ({_columns(period)}) VALUES ({values}) "
        f"ON CONFLICT ({period}, {', '.join(KEY)}) DO UPDATE SET {_add_excluded()};"
    )


def _sqlite_subtract(table: str, r: str = "OLD") -> str:
    period, expr = _SQLITE_PERIODS[table]
    values = _sqlite_values(r)[len(KEY) :]
    sets = ", ".join(f"{c} = {c} - {v}" for c, v in zip(SUMS, values, strict=True))
    match = " AND ".join(
        [f"{period} = {expr.format(r=r)}"]
        + [f"{c} = {v}" for c, v in zip(KEY, _sqlite_values(r), strict=False)]
    )
    return (
        f"UPDATE {table} SET {sets} WHERE {match}; DELETE FROM {table} WHERE {match} AND calls = 0;"
    )


_WATCHED = (
    "created_at, provider_type, provider_config_id, model_name, task_type, status, source, "
    "input_tokens, output_tokens, total_tokens, cost_micro_usd, latency_ms"
)


def _sqlite_create() -> None:
    both = (HOURLY, DAILY)
    bodies = {
        "insert": ("AFTER INSERT", [_sqlite_add(t) for t in both]),
        "delete": ("AFTER DELETE", [_sqlite_subtract(t) for t in both]),
        "update": (
            f"AFTER UPDATE OF {_WATCHED}",
            [_sqlite_subtract(t) for t in both] + [_sqlite_add(t) for t in both],
        ),
    }
    for event, (when, statements) in bodies.items():
        op.execute(
            f"CREATE TRIGGER ai_usage_rollup_{event} {when} ON {USAGE} FOR EACH ROW BEGIN\n"
            + "\n".join(statements)
            + "\nEND"
        )


def _sqlite_drop() -> None:
    for event in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS ai_usage_rollup_{event}")


# --- backfill: both dialects ----------------------------------------------------------------


def _backfill(postgres: bool) -> None:
    hour = (
        _PG_HOUR.format(c="created_at") + " AT TIME ZONE 'UTC'"
        if postgres
        else "substr(created_at, 1, 13) || ':00:00.000000'"
    )
    lat = ", ".join(
        f"SUM(CASE WHEN {_in_bucket(k, 'latency_ms')} THEN 1 ELSE 0 END)" for k in range(len(LAT))
    )
    op.execute(
        f"INSERT INTO {HOURLY} ({_columns('hour')}) "
        f"SELECT {hour}, provider_type, COALESCE(provider_config_id, 0), model_name, task_type, "
        "status, source, COUNT(*), COUNT(cost_micro_usd), COALESCE(SUM(cost_micro_usd), 0), "
        "SUM(input_tokens), SUM(output_tokens), SUM(total_tokens), SUM(latency_ms), "
        f"{lat} FROM {USAGE} GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
    day = "CAST(hour AT TIME ZONE 'UTC' AS date)" if postgres else "substr(hour, 1, 10)"
    sums = ", ".join(f"SUM({c})" for c in SUMS)
    op.execute(
        f"INSERT INTO {DAILY} ({_columns('day')}) "
        f"SELECT {day}, {', '.join(KEY)}, {sums} FROM {HOURLY} GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table(USAGE) as batch_op:
        batch_op.drop_constraint(op.f("ck_ai_provider_usage_logs_source"), type_="check")
        batch_op.create_check_constraint(op.f("ck_ai_provider_usage_logs_source"), NEW_SOURCES)
    _rollup_table(HOURLY, sa.Column("hour", sa.DateTime(timezone=True), nullable=False))
    _rollup_table(DAILY, sa.Column("day", sa.Date(), nullable=False))
    if postgres:
        _pg_create()
    else:
        _sqlite_create()
    _backfill(postgres)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        _pg_drop()
    else:
        _sqlite_drop()
    op.drop_table(HOURLY)
    op.drop_table(DAILY)
    op.execute(f"DELETE FROM {USAGE} WHERE source = 'demo'")
    with op.batch_alter_table(USAGE) as batch_op:
        batch_op.drop_constraint(op.f("ck_ai_provider_usage_logs_source"), type_="check")
        batch_op.create_check_constraint(op.f("ck_ai_provider_usage_logs_source"), OLD_SOURCES)
