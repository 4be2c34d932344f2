"""CSV export of the Usage page: every figure it shows, as one long table, and an audit row.

One row per figure — section, period start, provider, task, config, metric, value, and the
service or tag of the cost-by-service and cost-by-tag rows — so a spreadsheet pivot rebuilds any
of the page's charts and tables. Percentiles carry their
kind ("exact" or "approximate") in the `basis` column. The first rows (section "selection")
say which range and filters the file holds; rates and averages are rounded to 4 decimals,
money is exact to the micro-dollar.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from core import audit
from core.access import Actor, require_role
from core.usage.queries import READERS
from core.usage.report import Percentiles, Totals, UsageReport

COLUMNS = ("section", "period_start", "provider_type", "task_type", "config", "metric", "value")
COLUMNS += ("basis", "service", "tag")
TOTALS = (
    "calls", "succeeded", "failed", "rejected", "success_rate", "error_rate", "cost_usd",
    "unpriced_calls", "input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
    "cache_write_tokens", "reasoning_tokens", "cache_savings_usd", "avg_latency_ms",
)  # fmt: skip


def report_csv(report: UsageReport) -> str:
    """The report as CSV text (header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    pad = [""] * len(COLUMNS)
    writer.writerows([_cell(v) for v in [*row, *pad][: len(COLUMNS)]] for row in _rows(report))
    return buffer.getvalue()


def export_csv(session: Session, actor: Actor, report: UsageReport) -> str:
    """`report_csv`, recorded in the audit trail as `usage.exported` with the range and filters."""
    require_role(session, actor, *READERS)
    text = report_csv(report)
    details = {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in selection(report).items()
    }
    audit.record(session, actor, "usage.exported", target_type="usage", details=details)
    return text


FILTERS = ("provider_type", "config_id", "model_name", "task_type", "status", "service", "tag")


def selection(report: UsageReport) -> dict[str, Any]:
    """The range and the filters set (name -> value) the report is for."""
    query = report.query
    chosen = {name: getattr(query, name) for name in FILTERS if getattr(query, name) is not None}
    return {"start": query.start, "end": query.end, **chosen}


def file_name(report: UsageReport) -> str:
    """usage-<start>-<end>[-<each filter set>].csv, so a saved export says what it holds."""
    parts = []
    for name, value in selection(report).items():
        if isinstance(value, datetime):
            parts.append(f"{value:%Y%m%d-%H%M}")
        else:
            parts.append(
                f"config{value}"
                if name == "config_id"
                else "no-service"
                if name == "service" and not value
                else str(value)
            )
    return "usage-" + "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts) + ".csv"


def _rows(report: UsageReport) -> Iterator[list[Any]]:
    query = report.query
    for name, value in selection(report).items():
        yield ["selection", "", "", "", "", name, value, ""]
    yield from _totals("range", query.start, report.headline.current)
    yield from _totals("previous period", query.previous().start, report.headline.previous)
    for p in report.cost_by_provider:
        yield ["cost by provider", p.t, p.provider_type, "", "", "cost_usd", p.cost_usd, ""]
        yield ["cost by provider", p.t, p.provider_type, "", "", "calls", p.calls, ""]
    for c in report.calls_over_time:
        for metric in ("calls", "succeeded", "failed", "rejected", "error_rate"):
            yield ["calls over time", c.t, "", "", "", metric, getattr(c, metric), ""]
    for point in report.latency_by_provider:
        base = ["latency by provider", point.t, point.provider_type, "", ""]
        yield [*base, "calls", point.calls, ""]
        yield [*base, "avg_ms", point.avg_ms, ""]
        yield from ([*base, *row] for row in _percentiles(point.latency))
    for section, groups in (
        ("cost by service", report.cost_by_service),
        ("cost by tag", report.cost_by_tag),
    ):
        for g in groups:
            by = [g.name, ""] if section == "cost by service" else ["", g.name]  # service, tag
            for metric in ("calls", "cost_usd", "total_tokens"):
                yield [section, "", "", "", "", metric, getattr(g, metric), "", *by]
    for t in report.tokens_by_task:
        for metric in ("calls", "input_tokens", "output_tokens", "total_tokens"):
            yield ["tokens by task", "", "", t.task_type, "", metric, getattr(t, metric), ""]
    for row in report.configs:
        base = ["configs", "", row.provider_type, "", f"{row.name} (#{row.config_id})"]
        for metric in (
            "calls", "success_rate", "cost_usd", "avg_latency_ms", "daily_token_limit",
            "used_today", "monthly_token_limit", "used_this_month",
        ):  # fmt: skip
            yield [*base, metric, getattr(row, metric), ""]


def _totals(section: str, start: datetime, totals: Totals) -> Iterator[list[Any]]:
    for metric in TOTALS:
        yield [section, start, "", "", "", metric, getattr(totals, metric), ""]
    for row in _percentiles(totals.latency):
        yield [section, start, "", "", "", *row]


def _percentiles(latency: Percentiles) -> Iterator[list[Any]]:
    basis = "exact" if latency.exact else "approximate"
    for name in ("p50", "p95", "p99"):
        yield [f"{name}_ms", getattr(latency, name), basis]


def _cell(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None:
        return ""
    if isinstance(value, float):  # an average or a rate: no float noise (1362.1999999999985)
        return round(value, 4)
    # A spreadsheet runs a cell that starts with = + - @ as a formula; config names are typed
    # by people (OWASP "CSV injection").
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
