"""Which alerts are due: limits crossed and error rates too high, claimed once each.

Limits: what each config used today and this month, from the quota counters (the settled
tokens and micro-dollars, core/quota/forecast.py), against its token limits and dollar budgets.
A rule's threshold is crossed when used >= threshold% of the limit; 100% means the limit is used
up. Error rate: a config's failed calls (error, timeout) of all its answered ones in the last
15 minutes, once there were at least the rule's minimum number of calls.

Each alert is an `alert_deliveries` row whose unique key (rule, config, kind, period,
threshold) is the claim: however many watchers run, on however many machines, each threshold
is sent once per day or month (error rates once per quarter hour). The courier sends them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.alerts.outbox import Message
from core.alerts.targets import KIND_NAMES
from core.models import (
    AlertDelivery,
    AlertKind,
    AlertRule,
    DeliveryStatus,
    ProviderConfig,
    UsageLog,
    UsageStatus,
)
from core.quota.forecast import Forecast, forecasts

ERROR_WINDOW = timedelta(minutes=15)
FAILED = (UsageStatus.ERROR.value, UsageStatus.TIMEOUT.value)
ANSWERED = (UsageStatus.SUCCESS.value, *FAILED)
PRODUCT = "AI Provider Console"


@dataclass(frozen=True)
class Due:
    """One alert to claim."""

    rule_id: int
    config_id: int
    kind: str
    period: str
    threshold: int
    message: Message


def claim_due(session: Session, now: datetime) -> int:
    """Claim every alert that is due and not claimed yet; how many were new."""
    return claim(session, find_due(session, now), now)


def claim(session: Session, due: list[Due], now: datetime) -> int:
    """Claim those of `due` not claimed yet; how many were new. Runs in the caller's
    transaction; a claim another watcher made first is skipped, not an error."""
    if not due:
        return 0
    seen = set(
        session.execute(
            select(
                AlertDelivery.rule_id,
                AlertDelivery.config_id,
                AlertDelivery.kind,
                AlertDelivery.period,
                AlertDelivery.threshold,
            ).where(
                tuple_(AlertDelivery.rule_id, AlertDelivery.period).in_(
                    {(d.rule_id, d.period) for d in due}
                )
            )
        ).all()
    )
    new = [d for d in due if (d.rule_id, d.config_id, d.kind, d.period, d.threshold) not in seen]
    if not new:
        return 0
    groups: dict[tuple[int, int, str, str], list[Due]] = {}
    for d in new:
        groups.setdefault((d.rule_id, d.config_id, d.kind, d.period), []).append(d)
    rows = []
    for group in groups.values():
        group.sort(key=lambda d: d.threshold)
        *lower, top = group
        message = top.message.also_crossed([d.threshold for d in lower]) if lower else None
        rows.append(_row(top, DeliveryStatus.PENDING, now, message))
        rows += [_row(d, DeliveryStatus.SUPERSEDED, now) for d in lower]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = AlertDelivery.__table__
    insert = dialect.insert(table).on_conflict_do_nothing().returning(table.c.status)
    statuses = session.connection().execute(insert, rows).scalars().all()
    return statuses.count(DeliveryStatus.PENDING.value)


def _row(
    due: Due, status: DeliveryStatus, now: datetime, message: Message | None = None
) -> dict[str, Any]:
    return {
        "rule_id": due.rule_id,
        "config_id": due.config_id,
        "kind": due.kind,
        "period": due.period,
        "threshold": due.threshold,
        "body": (message or due.message).body,
        "status": status.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def find_due(session: Session, now: datetime) -> list[Due]:
    """Every (rule, config, threshold) crossed now, claimed or not."""
    now = now.astimezone(UTC)
    rules = session.scalars(select(AlertRule).where(AlertRule.is_active)).all()
    if not rules:
        return []
    configs = {c.id: c for c in session.scalars(select(ProviderConfig))}
    due: list[Due] = []
    if any(r.limit_kinds for r in rules):
        outlook = forecasts(session, configs.values(), now)
        for rule in rules:
            for config in _scope(rule, configs):
                for forecast in outlook.get(config.id, []):
                    due += _limit_alerts(rule, config, forecast, now)
    if any(r.error_rate_percent is not None for r in rules):
        rates = error_rates(session, now)
        for rule in rules:
            if rule.error_rate_percent is None:
                continue
            for config in _scope(rule, configs):
                calls, failed = rates.get(config.id, (0, 0))
                if calls >= rule.error_min_calls and failed * 100 > rule.error_rate_percent * calls:
                    due.append(_error_alert(rule, config, calls, failed, now))
    return due


def error_rates(session: Session, now: datetime) -> dict[int, tuple[int, int]]:
    """Each config's answered and failed calls of the last ERROR_WINDOW."""
    rows = session.execute(
        select(
            UsageLog.provider_config_id,
            func.count(),
            func.sum(case((UsageLog.status.in_(FAILED), 1), else_=0)),
        )
        .where(
            UsageLog.created_at > now - ERROR_WINDOW,
            UsageLog.created_at <= now,
            UsageLog.status.in_(ANSWERED),
            UsageLog.provider_config_id.is_not(None),
        )
        .group_by(UsageLog.provider_config_id)
    ).all()
    return {int(c): (int(calls), int(failed or 0)) for c, calls, failed in rows}


def _scope(rule: AlertRule, configs: dict[int, ProviderConfig]) -> Iterable[ProviderConfig]:
    if rule.config_id is None:
        return configs.values()
    config = configs.get(rule.config_id)
    return [] if config is None else [config]


def _limit_alerts(
    rule: AlertRule, config: ProviderConfig, forecast: Forecast, now: datetime
) -> list[Due]:
    kind = f"{forecast.unit}_{forecast.period}"
    if kind not in rule.limit_kinds.split(",") or forecast.limit <= 0:
        return []  # a limit of 0 switches the config off; nothing to warn about
    period = f"{now:%Y-%m-%d}" if forecast.period == "day" else f"{now:%Y-%m}"
    crossed = [t for t in thresholds(rule) if forecast.used * 100 >= t * forecast.limit]
    return [
        Due(rule.id, config.id, kind, period, t, limit_message(config, forecast, kind, period, t))
        for t in crossed
    ]


def thresholds(rule: AlertRule) -> list[int]:
    return [int(t) for t in rule.thresholds.split(",") if t]


def limit_message(
    config: ProviderConfig, forecast: Forecast, kind: str, period: str, threshold: int
) -> Message:
    name = KIND_NAMES[kind]
    percent = forecast.used * 100 / forecast.limit
    usd = forecast.unit == "usd"
    when = "today (UTC)" if forecast.period == "day" else "this month (UTC)"
    if forecast.reached:
        headline = f"{config.display_name} has used up its {name}"
        after = "Calls are refused (or fall back to another provider) until the " + (
            "day ends at midnight UTC." if forecast.period == "day" else "month ends (UTC)."
        )
    else:
        headline = f"{config.display_name} has used {percent:.0f}% of its {name}"
        after = f"Forecast: {forecast.sentence}."
    text = (
        f"{headline}: {forecast.used_text} {when}. Alert at {threshold}%. {after}\n"
        f"Config {config.id}: {config.provider_type} {config.model_name}."
    )
    body = _body(config) | {
        "event": "limit_threshold_crossed",
        "kind": kind,
        "unit": "USD" if usd else "tokens",
        "period": forecast.period,
        "period_start": period,
        "threshold_percent": threshold,
        "used": _amount(forecast.used, usd),
        "limit": _amount(forecast.limit, usd),
        "used_percent": round(percent, 2),
        "used_text": forecast.used_text,
        "forecast": forecast.sentence,
    }
    subject = f"{PRODUCT}: {config.display_name} at {threshold}% of its {name}"
    return Message(subject, text, body | {"subject": subject, "text": text})


def _error_alert(
    rule: AlertRule, config: ProviderConfig, calls: int, failed: int, now: datetime
) -> Due:
    quarter = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    period = f"{quarter:%Y-%m-%dT%H:%M}"
    level = rule.error_rate_percent or 0
    rate = failed * 100 / calls
    text = (
        f"{config.display_name}: {failed:,} of {calls:,} calls ({rate:.1f}%) failed in the last "
        f"15 minutes, above the {level}% alert level.\n"
        f"Config {config.id}: {config.provider_type} {config.model_name}."
    )
    subject = f"{PRODUCT}: {config.display_name} failing ({rate:.0f}% of calls)"
    body = _body(config) | {
        "event": "error_rate_above_level",
        "kind": AlertKind.ERROR_RATE.value,
        "period": "15m",
        "period_start": period,
        "threshold_percent": level,
        "calls": calls,
        "failed": failed,
        "error_rate_percent": round(rate, 2),
        "subject": subject,
        "text": text,
    }
    message = Message(subject, text, body)
    return Due(rule.id, config.id, AlertKind.ERROR_RATE.value, period, level, message)


def _body(config: ProviderConfig) -> dict[str, Any]:
    return {
        "source": PRODUCT,
        "config": {
            "id": config.id,
            "name": config.display_name,
            "provider": config.provider_type,
            "model": config.model_name,
        },
    }


def _amount(value: int, usd: bool) -> float | int:
    return round(value / 1_000_000, 6) if usd else value
