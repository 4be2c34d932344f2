"""A usage row as the router makes it (`UsageRecord`), and as it is spooled: one JSON object
with the row's columns, its time as ISO text, the reservation its settlement finishes, and,
for a row whose cost is still to be worked out, the models to price it by (the writer's thread
prices it, and what the prompt cache saved, when it reads the entry back: core/pricing.py).
An entry spooled by an earlier version (without the cache and reasoning columns, or service and
tags) is stored with them NULL (or ""); its hold (without micro-dollars) held none."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

from core.models import utcnow
from core.pricing import Priced, to_micro_usd
from core.quota.ledger import Reservation


@dataclass(frozen=True)
class UsageRecord:
    """One attempt, as stored in ai_provider_usage_logs."""

    provider_config_id: int | None
    user_id: int | None
    provider_type: str
    model_name: str
    task_type: str
    status: str
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_micro_usd: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    latency_ms: int = 0
    source: str = "router"
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_savings_micro_usd: int | None = None
    service: str = ""  # core/usage/attribution.py
    tags: str = ""
    created_at: datetime = field(default_factory=utcnow)
    attempt_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Not a column: when set (and cost_micro_usd is None), the cost is priced from it.
    priced: Priced | None = field(default=None, repr=False, compare=False)


COLUMNS = tuple(f.name for f in fields(UsageRecord) if f.name != "priced")
# Columns a spool written by an earlier version lacks (its rows are stored with them NULL).
LATER = {
    "cached_input_tokens": None,
    "cache_write_tokens": None,
    "reasoning_tokens": None,
    "cache_savings_micro_usd": None,
    "service": "",
    "tags": "",
}


def encode(record: UsageRecord, hold: Reservation | None) -> dict[str, Any]:
    """The spool entry for an attempt and the hold its settlement finishes."""
    # Every column is a scalar: read them directly (dataclasses.asdict deep-copies each value,
    # a third of what spooling cost a call).
    entry = {name: getattr(record, name) for name in COLUMNS}
    entry["created_at"] = record.created_at.isoformat()
    if hold is not None:
        entry["hold"] = [
            hold.id,
            hold.config_id,
            hold.day.isoformat(),
            hold.tokens,
            hold.draw,
            hold.micro_usd,
        ]
    if record.priced is not None and record.cost_micro_usd is None:
        entry["price_by"] = list(record.priced.models)
    return entry


def decode(entry: dict[str, Any]) -> tuple[dict[str, Any], Reservation | None] | None:
    """The row (column -> value) and hold of a spool entry; None if it is not one."""
    try:
        row = {
            name: entry[name] if name not in LATER else entry.get(name, LATER[name])
            for name in COLUMNS
        }
        row["created_at"] = datetime.fromisoformat(entry["created_at"])
        if row["created_at"].utcoffset() is None or not isinstance(row["attempt_id"], str):
            return None
        hold = None
        if (raw := entry.get("hold")) is not None:
            hold_id, config_id, day, tokens, draw, *money = raw  # no money: an earlier version
            hold = Reservation(
                int(hold_id),
                int(config_id),
                date.fromisoformat(day),
                int(tokens),
                bool(draw),
                int(money[0]) if money else 0,
            )
        if (models := entry.get("price_by")) is not None:
            priced = Priced(
                row["provider_type"],
                tuple(str(m) for m in models),
                row["input_tokens"],
                row["output_tokens"],
                row["created_at"],
                row["cached_input_tokens"] or 0,
                row["cache_write_tokens"] or 0,
            )
            row["cost_micro_usd"] = to_micro_usd(priced.usd)
            row["cache_savings_micro_usd"] = to_micro_usd(priced.savings_usd)
    except (KeyError, TypeError, ValueError, ArithmeticError):  # ArithmeticError: absurd tokens
        return None
    return row, hold
