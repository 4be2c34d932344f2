"""Field rules for provider configs: every value a person typed, checked before anything
else happens, with one message per bad field that names it.

Text must carry no control characters (PostgreSQL refuses NUL; nothing typed needs the rest),
numbers must fit their columns, a dollar budget needs a model genai-prices can price, and a
base URL must be http(s) and pass the egress policy (core.providers.egress) unless the
operator allowed its host.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from core.models import TASKS, ProviderType
from core.pricing import can_price
from core.providers.egress import Allowlist, EgressRefused, check_base_url

MAX_NAME = 200


MAX_DESCRIPTION = 2000


MAX_URL = 500


MAX_PRIORITY = 2**31 - 1  # the column is a 32-bit integer


MAX_TOKENS = 2**63 - 1  # and the limits 64-bit ones


MAX_BUDGET_USD = Decimal(1_000_000_000)  # far above any real budget; micro-dollars fit 64 bits


class AdminError(Exception):
    """Base of the service's refusals; the message is meant for the person who asked."""


class ValidationFailed(AdminError):
    """One or more fields are invalid; `errors` maps each field to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{name}: {text}" for name, text in self.errors.items()))


@dataclass(frozen=True)
class ProviderInput:
    """What a form or the command line hands in. On update, an empty api_key keeps the key."""

    provider_type: str
    model_name: str
    display_name: str
    api_key: str | None = None
    description: str = ""
    base_url: str | None = None
    tasks: Collection[str] = ()
    priority: Any = 100
    daily_token_limit: Any = None
    monthly_token_limit: Any = None
    daily_budget_usd: Any = None  # dollars: "25", "2.50", "$1,000" or a Decimal
    monthly_budget_usd: Any = None
    is_active: bool = True
    is_default: bool = False


def check_fields(
    data: ProviderInput, *, creating: bool, allowlist: Allowlist | None = None
) -> None:
    """Raise ValidationFailed naming every bad field (forms call it before asking for a code)."""
    clean(data, creating=creating, allowlist=allowlist)


def clean(
    data: ProviderInput, *, creating: bool, allowlist: Allowlist | None = None
) -> dict[str, Any]:
    """Normalised column values, or ValidationFailed naming every bad field.

    Everything is checked here, before any database write or network call: text without
    control characters, numbers within their columns, and a base URL whose host is public (or
    allowed by the operator).
    """
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}

    kind = _text(data.provider_type, "provider_type", errors).lower()
    if "provider_type" not in errors and kind not in {t.value for t in ProviderType}:
        errors["provider_type"] = (
            f"unknown provider type {kind[:40]!r}: use gemini, openai or claude"
        )
    out["provider_type"] = kind

    for name, limit in (("model_name", MAX_NAME), ("display_name", MAX_NAME)):
        value = _text(getattr(data, name), name, errors)
        if name in errors:
            pass
        elif not value:
            errors[name] = "must not be empty"
        elif len(value) > limit:
            errors[name] = f"must be at most {limit} characters"
        out[name] = value

    description = _text(data.description, "description", errors)
    if "description" not in errors and len(description) > MAX_DESCRIPTION:
        errors["description"] = f"must be at most {MAX_DESCRIPTION} characters"
    out["description"] = description

    out["api_key"] = _clean_key(data.api_key, creating, errors)

    out["base_url"] = _clean_url(data.base_url, errors, allowlist)

    tasks = {_text(task, "tasks", errors) for task in data.tasks} - {""}
    if "tasks" not in errors and (unknown := sorted(tasks - set(TASKS))):
        errors["tasks"] = f"unknown task {', '.join(unknown)}: use {', '.join(TASKS)}"
    for task in TASKS:
        out[f"default_for_{task}"] = task in tasks

    out["priority"] = _whole(data.priority, "priority", errors, MAX_PRIORITY, allow_none=False)
    for name in ("daily_token_limit", "monthly_token_limit"):
        out[name] = _whole(getattr(data, name), name, errors, MAX_TOKENS)
    for period in ("daily", "monthly"):
        name = f"{period}_budget_usd"
        out[f"{period}_budget_micro_usd"] = budget = _dollars(getattr(data, name), name, errors)
        named = not errors.keys() & {"provider_type", "model_name"}
        if budget is not None and named and not can_price(kind, out["model_name"]):
            errors[name] = (
                f"cannot be set: genai-prices has no price for {out['model_name'][:80]}, "
                "so what its calls cost is not known (use a token limit instead)"
            )
    out["is_active"] = bool(data.is_active)
    out["is_default"] = bool(data.is_default)

    if errors:
        raise ValidationFailed(errors)
    return out


def _clean_key(raw: str | None, creating: bool, errors: dict[str, str]) -> str | None:
    key = (raw or "").strip()
    if not key:
        if creating:
            errors["api_key"] = "must not be empty"
        return None
    if not key.isprintable() or any(ch.isspace() for ch in key) or len(key) < 8:
        errors["api_key"] = (
            "does not look like an API key (no spaces or control characters, at least 8 characters)"
        )
        return None
    return key


def _text(raw: object, name: str, errors: dict[str, str]) -> str:
    """`raw` trimmed; NUL and other control characters are refused (no database stores them
    alike, and they hide text from whoever reads the audit log)."""
    value = str(raw or "").strip()
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value):
        errors[name] = "must not contain control characters"
    return value


def _clean_url(raw: str | None, errors: dict[str, str], allowlist: Allowlist | None) -> str | None:
    url = _text(raw, "base_url", errors)
    if not url or "base_url" in errors:
        return url or None
    parts = urlsplit(url)
    try:
        host, _ = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        errors["base_url"] = "must be an http:// or https:// URL with a host"
    elif parts.username or parts.password:
        errors["base_url"] = "must not contain credentials; put the key in the API key field"
    elif len(url) > MAX_URL:
        errors["base_url"] = f"must be at most {MAX_URL} characters"
    else:
        try:
            check_base_url(url, allowlist)
        except EgressRefused as exc:
            errors["base_url"] = str(exc)
    return url.rstrip("/")


def _dollars(value: Any, name: str, errors: dict[str, str]) -> int | None:
    """A dollar amount as integer micro-dollars (None: no budget)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        errors[name] = "must be an amount in dollars, such as 25 or 2.50"
        return None
    text = str(value).strip().removeprefix("$").replace(",", "").replace("_", "").strip()
    if not re.fullmatch(r"-?([0-9]{1,40}(\.[0-9]*)?|\.[0-9]+)", text):
        errors[name] = "must be an amount in dollars, such as 25 or 2.50"
        return None
    amount = Decimal(text)
    if amount < 0:
        errors[name] = "must not be negative"
    elif amount > MAX_BUDGET_USD:
        errors[name] = f"must be at most ${MAX_BUDGET_USD:,}"
    elif amount != amount.quantize(Decimal("0.000001")):
        errors[name] = "must be in whole micro-dollars (at most 6 decimal places)"
    else:
        return int(amount * 1_000_000)
    return None


def _whole(
    value: Any, name: str, errors: dict[str, str], maximum: int, allow_none: bool = True
) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if not allow_none:
            errors[name] = "must be given"
        return None
    if isinstance(value, bool):
        errors[name] = "must be a whole number"
        return None
    if isinstance(value, float):
        if not value.is_integer():
            errors[name] = "must be a whole number"
            return None
        value = int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        if not re.fullmatch(r"-?[0-9]{1,40}", text):
            errors[name] = "must be a whole number"
            return None
        value = int(text)
    if not isinstance(value, int):
        errors[name] = "must be a whole number"
        return None
    if value < 0:
        errors[name] = "must not be negative"
        return None
    if value > maximum:
        errors[name] = f"must be at most {maximum:,}"
        return None
    return value
