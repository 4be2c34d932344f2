"""The SQL of the triggers that keep the usage rollups equal to the raw rows, for the migrations
that install them (215e8de742e8 first, then each migration that adds a sum).

Each migration passes its own frozen `Rollups` (the sums and the latency bucket bounds of its
revision: `FIRST`, or `FIRST.plus(...)` for a migration that adds sums), so a later
migration's sums change no earlier migration's SQL. A sum is a rollup
column and the value one usage row adds to it, as SQL over the row's columns (`{r}` is where a
row qualifier goes: `NEW.`, `OLD.` or nothing); the latency histogram is always there.

- PostgreSQL: statement-level triggers with transition tables, so a batch or a COPY is folded
  in with one aggregated upsert per statement, taking the rollup rows' locks in key order;
  TRUNCATE empties the rollups.
- SQLite: row-level triggers (SQLite has no statement-level ones) doing the same upserts.

`retained()` rollups (from migration 8d4f2b6e1a37 on) consult the retention watermark on
DELETE: a deleted row created before `ai_provider_usage_retention.pruned_before` is not
subtracted, so pruning raw rows (core/usage/retention.py) keeps the rollups of the days it
empties. Inserts and updates are counted as before.
"""

# ruff: noqa: S608 (every SQL string here is built from the migrations' constants, never input)

from __future__ import annotations

from dataclasses import dataclass, replace

from alembic import op

USAGE = "ai_provider_usage_logs"
HOURLY = "ai_provider_usage_hourly"
DAILY = "ai_provider_usage_daily"
RETENTION = "ai_provider_usage_retention"
KEY = ("provider_type", "config_id", "model_name", "task_type", "status", "source")
EVENTS = ("insert", "delete", "update")
_PG_HOUR = "date_trunc('hour', {c} AT TIME ZONE 'UTC')"  # a UTC wall-clock timestamp
_SQLITE_PERIODS = {
    HOURLY: ("hour", "substr({r}created_at, 1, 13) || ':00:00.000000'"),
    DAILY: ("day", "substr({r}created_at, 1, 10)"),
}


@dataclass(frozen=True)
class Rollups:
    """One revision's rollup triggers: its sums (column, value per usage row) and the latency
    histogram's bucket bounds; `watched` are the usage columns an UPDATE must re-count."""

    sums: tuple[tuple[str, str], ...]
    bounds: tuple[int, ...]
    watched: tuple[str, ...]
    key: tuple[str, ...] = KEY  # the rollup rows' key columns, after their hour or day
    retention: bool = False  # a DELETE of a row before the watermark subtracts nothing

    @property
    def latency(self) -> tuple[str, ...]:
        return tuple(f"lat_{k:02d}" for k in range(len(self.bounds)))

    @property
    def columns(self) -> tuple[str, ...]:
        """Every summed rollup column, in order."""
        return (*(name for name, _ in self.sums), *self.latency)

    def plus(self, *columns: str) -> Rollups:
        """These rollups, also summing each of `columns` of the usage rows (NULL adds 0)."""
        sums = tuple((name, f"COALESCE({{r}}{name}, 0)") for name in columns)
        return replace(self, sums=self.sums + sums, watched=self.watched + columns)

    def keyed(self, *columns: str) -> Rollups:
        """These rollups, also keyed by each of `columns` of the usage rows (NOT NULL ones)."""
        return replace(self, watched=self.watched + columns, key=self.key + columns)

    def retained(self) -> Rollups:
        """These rollups, whose DELETE trigger leaves rows before the retention watermark
        counted (the table RETENTION must exist)."""
        return replace(self, retention=True)

    def _kept(self, r: str) -> str:
        """SQL truth value: deleted usage row `r` (qualifier with the dot) is still counted
        after its deletion, being older than the retention watermark."""
        return f"EXISTS (SELECT 1 FROM {RETENTION} w WHERE {r}created_at < w.pruned_before)"

    @property
    def _grouped(self) -> str:
        """GROUP BY / ORDER BY positions: the period, then the key."""
        return ", ".join(str(n) for n in range(1, len(self.key) + 2))

    def _usage_key(self, r: str = "") -> list[str]:
        """The key as SQL over a usage row (`r`: its qualifier with the dot, or nothing)."""
        return [
            f"COALESCE({r}provider_config_id, 0)" if k == "config_id" else f"{r}{k}"
            for k in self.key
        ]

    def create(self, postgres: bool) -> None:
        if postgres:
            self._pg_create()
        else:
            self._sqlite_create()

    def drop(self, postgres: bool) -> None:
        for event in EVENTS:
            if postgres:
                op.execute(f"DROP TRIGGER IF EXISTS ai_usage_rollup_{event} ON {USAGE}")
                op.execute(f"DROP FUNCTION IF EXISTS ai_usage_rollup_on_{event}()")
            else:
                op.execute(f"DROP TRIGGER IF EXISTS ai_usage_rollup_{event}")
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS ai_usage_rollup_truncate ON {USAGE}")
            op.execute("DROP FUNCTION IF EXISTS ai_usage_rollup_on_truncate()")

    def backfill(self, postgres: bool) -> None:
        """Sum the existing usage rows into the (empty) rollups."""
        hour = (
            _PG_HOUR.format(c="created_at") + " AT TIME ZONE 'UTC'"
            if postgres
            else "substr(created_at, 1, 13) || ':00:00.000000'"
        )
        values = [f"SUM({value.format(r='')})" for _, value in self.sums]
        values += [
            f"SUM(CASE WHEN {self._in_bucket(k, 'latency_ms')} THEN 1 ELSE 0 END)"
            for k in self._buckets()
        ]
        op.execute(
            f"INSERT INTO {HOURLY} ({self._list('hour')}) "
            f"SELECT {hour}, {', '.join(self._usage_key())}, {', '.join(values)} FROM {USAGE} "
            f"GROUP BY {self._grouped}"
        )
        day = "CAST(hour AT TIME ZONE 'UTC' AS date)" if postgres else "substr(hour, 1, 10)"
        sums = ", ".join(f"SUM({c})" for c in self.columns)
        op.execute(
            f"INSERT INTO {DAILY} ({self._list('day')}) "
            f"SELECT {day}, {', '.join(self.key)}, {sums} FROM {HOURLY} GROUP BY {self._grouped}"
        )

    # --- shared -------------------------------------------------------------------------------

    def _buckets(self) -> range:
        return range(len(self.bounds))

    def _in_bucket(self, k: int, x: str) -> str:
        """SQL truth value: latency expression `x` falls in histogram bucket k."""
        if k == 0:
            return f"{x} < {self.bounds[1]}"
        if k == len(self.bounds) - 1:
            return f"{x} >= {self.bounds[k]}"
        return f"{x} >= {self.bounds[k]} AND {x} < {self.bounds[k + 1]}"

    def _list(self, period: str) -> str:
        return ", ".join((period, *self.key, *self.columns))

    def _add_excluded(self, alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        return ", ".join(f"{c} = {prefix}{c} + excluded.{c}" for c in self.columns)

    # --- PostgreSQL: statement-level triggers ---------------------------------------------------

    def _pg_apply(self, rows: str) -> str:
        """One statement folding signed usage rows (`rows`: usage columns plus `sign`) into both
        rollups, keys in a fixed order so concurrent writers lock rollup rows in the same order."""
        thresholds = ", ".join(str(b) for b in self.bounds[1:])
        deltas = [f"SUM(sign * ({value.format(r='')})) AS {name}" for name, value in self.sums]
        deltas += [
            f"COALESCE(SUM(sign) FILTER (WHERE b = {k}), 0) AS {c}"
            for k, c in enumerate(self.latency)
        ]
        keys = ", ".join(self.key)
        usage_key = ", ".join(
            f"{v} AS {k}" if v != k else k for k, v in zip(self.key, self._usage_key(), strict=True)
        )
        grouped = self._grouped
        sums = ", ".join(f"SUM({c})" for c in self.columns)
        measures = ",\n        ".join(deltas)
        return f"""
WITH changed AS ({rows}),
delta AS (
    SELECT {_PG_HOUR.format(c="created_at")} AS hour_utc, {usage_key},
        {measures}
    FROM (SELECT c.*, width_bucket(c.latency_ms, ARRAY[{thresholds}]) AS b FROM changed c) x
    GROUP BY {grouped}
),
hourly AS (
    INSERT INTO {HOURLY} AS r ({self._list("hour")})
    SELECT hour_utc AT TIME ZONE 'UTC', {keys}, {", ".join(self.columns)} FROM delta
    ORDER BY {grouped}
    ON CONFLICT (hour, {keys}) DO UPDATE SET {self._add_excluded("r")}
    RETURNING 1
)
INSERT INTO {DAILY} AS r ({self._list("day")})
SELECT CAST(hour_utc AS date), {keys}, {sums} FROM delta
GROUP BY {grouped}
ORDER BY {grouped}
ON CONFLICT (day, {keys}) DO UPDATE SET {self._add_excluded("r")}"""

    def _pg_create(self) -> None:
        drop_empty = f"""
DELETE FROM {HOURLY} WHERE calls = 0 AND hour IN (
    SELECT DISTINCT {_PG_HOUR.format(c="created_at")} AT TIME ZONE 'UTC' FROM old_rows);
DELETE FROM {DAILY} WHERE calls = 0 AND day IN (
    SELECT DISTINCT CAST(created_at AT TIME ZONE 'UTC' AS date) FROM old_rows);"""
        deleted = "SELECT o.*, -1 AS sign FROM old_rows o"
        if self.retention:
            deleted += f" WHERE NOT {self._kept('o.')}"
        changed = {
            "insert": ("SELECT n.*, 1 AS sign FROM new_rows n", "NEW TABLE AS new_rows"),
            "delete": (deleted, "OLD TABLE AS old_rows"),
            "update": (
                "SELECT n.*, 1 AS sign FROM new_rows n UNION ALL SELECT o.*, -1 FROM old_rows o",
                "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            ),
        }
        for event, (rows, transition) in changed.items():
            body = self._pg_apply(rows) + ";" + ("" if event == "insert" else drop_empty)
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
            "CREATE FUNCTION ai_usage_rollup_on_truncate() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$\nBEGIN DELETE FROM {HOURLY}; DELETE FROM {DAILY}; RETURN NULL; END\n$$"
        )
        op.execute(
            f"CREATE TRIGGER ai_usage_rollup_truncate AFTER TRUNCATE ON {USAGE} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ai_usage_rollup_on_truncate()"
        )

    # --- SQLite: row-level triggers -------------------------------------------------------------

    def _sqlite_values(self, r: str) -> list[str]:
        x = f"{r}.latency_ms"
        return [
            *self._usage_key(r + "."),
            *(f"({value.format(r=r + '.')})" for _, value in self.sums),
            *(f"({self._in_bucket(k, x)})" for k in self._buckets()),
        ]

    def _sqlite_add(self, table: str, r: str = "NEW") -> str:
        period, expr = _SQLITE_PERIODS[table]
        values = ", ".join([expr.format(r=r + "."), *self._sqlite_values(r)])
        return (
            f"INSERT INTO {table} ({self._list(period)}) VALUES ({values}) "
            f"ON CONFLICT ({period}, {', '.join(self.key)}) DO UPDATE SET {self._add_excluded()};"
        )

    def _sqlite_subtract(self, table: str, r: str = "OLD") -> str:
        period, expr = _SQLITE_PERIODS[table]
        values = self._sqlite_values(r)
        sets = ", ".join(
            f"{c} = {c} - {v}" for c, v in zip(self.columns, values[len(self.key) :], strict=True)
        )
        match = " AND ".join(
            [f"{period} = {expr.format(r=r + '.')}"]
            + [f"{c} = {v}" for c, v in zip(self.key, values, strict=False)]
        )
        return (
            f"UPDATE {table} SET {sets} WHERE {match}; "
            f"DELETE FROM {table} WHERE {match} AND calls = 0;"
        )

    def _sqlite_create(self) -> None:
        both = (HOURLY, DAILY)
        bodies = {
            "insert": ("AFTER INSERT", [self._sqlite_add(t) for t in both]),
            "delete": ("AFTER DELETE", [self._sqlite_subtract(t) for t in both]),
            "update": (
                f"AFTER UPDATE OF {', '.join(self.watched)}",
                [self._sqlite_subtract(t) for t in both] + [self._sqlite_add(t) for t in both],
            ),
        }
        for event, (when, statements) in bodies.items():
            only = f" WHEN NOT {self._kept('OLD.')}" if event == "delete" and self.retention else ""
            op.execute(
                f"CREATE TRIGGER ai_usage_rollup_{event} {when} ON {USAGE} FOR EACH ROW{only} "
                "BEGIN\n" + "\n".join(statements) + "\nEND"
            )


# The rollups as migration 215e8de742e8 made them; later migrations add to them (`plus`).
FIRST = Rollups(
    sums=(
        ("calls", "1"),
        ("priced_calls", "CASE WHEN {r}cost_micro_usd IS NULL THEN 0 ELSE 1 END"),
        ("cost_micro_usd", "COALESCE({r}cost_micro_usd, 0)"),
        ("input_tokens", "{r}input_tokens"),
        ("output_tokens", "{r}output_tokens"),
        ("total_tokens", "{r}total_tokens"),
        ("latency_ms_sum", "{r}latency_ms"),
    ),
    bounds=(
        0, 10, 25, 50, 60, 72, 86, 104, 124, 149, 179, 215, 258, 310, 372, 446, 535, 642, 770,
        924, 1109, 1331, 1597, 1917, 2300, 2760, 3312, 3975, 4770, 5724, 6869, 8242, 9891, 11869,
        14243, 17091, 20509, 24611, 29533, 35440, 42528, 51034, 61240, 73489, 88186, 105824,
        126988, 300000,
    ),
    watched=(
        "created_at", "provider_type", "provider_config_id", "model_name", "task_type", "status",
        "source", "input_tokens", "output_tokens", "total_tokens", "cost_micro_usd", "latency_ms",
    ),
)  # fmt: skip
