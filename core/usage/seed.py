"""The seed's helper for code that calls a provider itself and logs the usage row."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from core.models import ProviderConfig, UsageLog
from core.pricing import estimate_cost_usd, to_micro_usd


def log_provider_usage(
    session: Session,
    config_id: int | None,
    user_id: int | None,
    task: str,
    *,
    provider_type: str | None = None,
    model_name: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    total_tokens: int | None = None,
    cost_usd: Decimal | None = None,
    status: str = "success",
    error_message: str | None = None,
    latency_ms: int = 0,
    estimated_cost_usd: Decimal | None = None,
) -> UsageLog:
    """Add a usage row to `session` (the seed's helper); provider and model default to the
    config's, and cost to genai-prices' figure for the tokens."""
    config = session.get(ProviderConfig, config_id) if config_id is not None else None
    provider_type = provider_type or (config.provider_type if config else None)
    model_name = model_name or (config.model_name if config else None)
    if not provider_type or not model_name:
        raise ValueError("give provider_type and model_name, or the id of a stored config")
    cost_usd = cost_usd if cost_usd is not None else estimated_cost_usd
    if cost_usd is None:
        cost_usd = estimate_cost_usd(provider_type, model_name, input_tokens, output_tokens)
    row = UsageLog(
        provider_config_id=config_id,
        user_id=user_id,
        provider_type=provider_type,
        model_name=model_name,
        task_type=task,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens if total_tokens is None else total_tokens,
        cost_micro_usd=to_micro_usd(cost_usd),
        status=status,
        error_message=error_message,
        latency_ms=latency_ms,
    )
    session.add(row)
    return row
