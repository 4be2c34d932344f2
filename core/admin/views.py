"""What callers and the audit log see of a config: never the key, only its last four."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from core.models import TASKS, ProviderConfig


@dataclass(frozen=True)
class ProviderView:
    """A config as pages and the CLI see it: no ciphertext, the key only as its last four."""

    id: int
    provider_type: str
    model_name: str
    display_name: str
    description: str
    base_url: str | None
    tasks: tuple[str, ...]
    priority: int
    daily_token_limit: int | None
    monthly_token_limit: int | None
    daily_budget_usd: Decimal | None
    monthly_budget_usd: Decimal | None
    is_active: bool
    is_default: bool
    key_last4: str
    last_tested_at: datetime | None
    last_test_success: bool | None
    last_test_message: str | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def masked_key(self) -> str:
        return f"…{self.key_last4}"

    @classmethod
    def of(cls, row: ProviderConfig) -> ProviderView:
        names = {f.name for f in fields(cls)} - {"tasks"}
        values = {name: getattr(row, name) for name in names}
        return cls(**values, tasks=tuple(task for task in TASKS if row.serves(task)))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for `providers list --json`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, Decimal):
                out[key] = amount_text(value)
        out["tasks"] = list(self.tasks)
        return out


def describe(row: ProviderConfig) -> dict[str, Any]:
    """Audit-safe facts about a config (never the key, only its last four)."""
    return {
        "display_name": row.display_name,
        "description": row.description,
        "provider_type": row.provider_type,
        "model_name": row.model_name,
        "base_url": _without_credentials(row.base_url),
        "tasks": [task for task in TASKS if row.serves(task)],
        "priority": row.priority,
        "daily_token_limit": row.daily_token_limit,
        "monthly_token_limit": row.monthly_token_limit,
        "daily_budget_usd": amount_text(row.daily_budget_usd),
        "monthly_budget_usd": amount_text(row.monthly_budget_usd),
        "is_active": row.is_active,
        "is_default": row.is_default,
        "key_last4": row.key_last4,
    }


def amount_text(amount: Decimal | None) -> str | None:
    """A dollar amount as typed back ("2.5", not "2.500000"); None stays None."""
    return None if amount is None else format(amount.normalize(), "f")


def _without_credentials(url: str | None) -> str | None:
    if not url:
        return url
    parts = urlsplit(url)
    return parts._replace(netloc=parts.hostname or "").geturl() if parts.password else url
