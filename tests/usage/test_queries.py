"""The analytics queries against brute force: every figure the Usage page shows is recomputed
in plain Python over the same raw rows (written out of order, with rows exactly on UTC
midnights and hour marks), for ranges that start and end on and off the boundaries, with and
without filters; percentiles exactly (small ranges) and within the histogram's tolerance."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.access import Actor, PermissionDenied
from core.models import QuotaCounter, User
from core.usage import percentiles
from core.usage.monitoring import daily_cost_by_provider, error_rate_by_provider, latency_trend
from core.usage.queries import (
    calls_over_time,
    config_usage,
    cost_by_provider,
    cost_by_service,
    cost_by_tag,
    filter_options,
    headline,
    latency_by_provider,
    tokens_by_task,
    totals,
    usage_report,
)
from core.usage.report import UsageQuery
from tests.support.database import MigratedDatabase
from tests.support.usage import (
    T0,
    add_configs,
    in_range,
    insert_out_of_order,
    percentile_cont,
    random_rows,
    raw_rows,
    within_histogram_tolerance,
)

M, H, D = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
QUERIES = {
    "whole days": dict(start=T0 - 7 * D, end=T0),
    "ragged": dict(start=T0 - 3 * D + 17 * M, end=T0 + 2 * D + 5 * H + 13 * M),
    "24 hours": dict(start=T0 - 20 * H - 5 * M, end=T0 + 4 * H + timedelta(seconds=1)),
    "one hour": dict(start=T0 - 30 * M, end=T0 + 30 * M),
    "openai extraction": dict(
        start=T0 - 5 * D, end=T0 + D, provider_type="openai", task_type="extraction"
    ),
    "no config": dict(start=T0 - 4 * D + 7 * H, end=T0 + 3 * H, config_id=0),
    "errors of a model": dict(
        start=T0 - 6 * D, end=T0 + 2 * D, status="error", model_name="gemini-2.5-flash"
    ),
    "a service": dict(start=T0 - 5 * D + 3 * H, end=T0 + D, service="billing-api"),
    "no service": dict(start=T0 - 5 * D, end=T0 + D + 90 * M, service=""),
    # "team=growth" alone and beside another tag; "feature=cv" is not "feature=cover_letter".
    "a tag": dict(start=T0 - 6 * D, end=T0 + 2 * D + 7 * M, tag="team=growth"),
    "a tag and a service": dict(start=T0 - 9 * D, end=T0, tag="feature=cv", service="cv-builder"),
}
Data = tuple[list[dict[str, Any]], dict[str, int], Actor]
FILTERS = ("provider_type", "config_id", "model_name", "task_type", "status", "service", "tag")


@pytest.fixture
def data(db: MigratedDatabase) -> Data:
    configs = add_configs(db)
    rows = random_rows(random.Random(11), 1500, T0 - 16 * D, T0 + 3 * D, configs)
    insert_out_of_order(db, rows, batches=6)
    with db.session() as session, session.begin():
        analyst = User(username="ana", password_hash="x", role="analyst")
        session.add(analyst)
        session.flush()
        actor = Actor(label="ana", user_id=analyst.id)
    return raw_rows(db), configs, actor


def matching(rows: list[dict[str, Any]], query: UsageQuery) -> list[dict[str, Any]]:
    filters = {name: getattr(query, name) for name in FILTERS}
    return in_range(rows, query.start, query.end, **filters)


def period(row: dict[str, Any], query: UsageQuery) -> date | datetime:
    moment = row["created_at"]
    return (
        moment.replace(minute=0, second=0, microsecond=0)
        if query.bucket == "hour"
        else moment.date()
    )


def latencies(rows: list[dict[str, Any]]) -> list[int]:
    return [r["latency_ms"] for r in rows if r["status"] not in ("rejected", "cancelled")]


def check_percentiles(found: Any, values: list[int], exact: bool) -> None:
    assert found.exact is exact
    for q, estimate in zip((0.5, 0.95, 0.99), (found.p50, found.p95, found.p99), strict=True):
        truth = percentile_cont(values, q)
        if truth is None:
            assert estimate is None
        elif exact:
            assert estimate == pytest.approx(truth, rel=1e-9, abs=1e-9)
        else:
            assert within_histogram_tolerance(estimate, values, q)


@pytest.fixture(params=[True, False], ids=["exact", "histogram"])
def exact(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if not request.param:  # every range counts as large: percentiles from the histograms
        for name in ("postgresql", "sqlite"):
            monkeypatch.setitem(percentiles.EXACT_MAX_CALLS, name, 0)
    return bool(request.param)


@pytest.mark.parametrize("name", QUERIES)
def test_totals_match_brute_force(db: MigratedDatabase, data: Data, exact: bool, name: str) -> None:
    rows, _, actor = data
    query = UsageQuery(**QUERIES[name])
    mine = matching(rows, query)
    assert mine, "the data must reach every query"
    with db.session() as session:
        got = totals(session, actor, query)
    assert got.calls == len(mine)
    assert got.succeeded == sum(r["status"] == "success" for r in mine)
    assert got.failed == sum(r["status"] in ("error", "timeout") for r in mine)
    assert got.rejected == sum(r["status"] == "rejected" for r in mine)
    assert got.cancelled == sum(r["status"] == "cancelled" for r in mine)
    assert got.priced_calls == sum(r["cost_micro_usd"] is not None for r in mine)
    assert got.cost_usd == Decimal(sum(r["cost_micro_usd"] or 0 for r in mine)) / 1_000_000
    for field in ("input_tokens", "output_tokens", "total_tokens"):
        assert getattr(got, field) == sum(r[field] for r in mine)
    assert got.demo_calls == sum(r["source"] == "demo" for r in mine)
    measured = latencies(mine)
    assert got.measured_calls == len(measured)
    assert got.avg_latency_ms == pytest.approx(sum(measured) / len(measured))
    assert got.success_rate == pytest.approx(got.succeeded / len(mine))
    check_percentiles(got.latency, measured, exact)


def test_headline_compares_with_the_period_before(db: MigratedDatabase, data: Data) -> None:
    rows, _, actor = data
    query = UsageQuery(**QUERIES["whole days"])
    with db.session() as session:
        both = headline(session, actor, query)
    before = in_range(rows, T0 - 14 * D, T0 - 7 * D)  # starts inclusive, ends exclusive
    assert both.previous.calls == len(before)
    assert both.change("calls") == pytest.approx((both.current.calls - len(before)) / len(before))
    rate_now = both.current.succeeded / both.current.calls
    rate_before = sum(r["status"] == "success" for r in before) / len(before)
    assert both.change("success_rate") == pytest.approx(rate_now - rate_before)


@pytest.mark.parametrize("name", QUERIES)
def test_series_match_brute_force(db: MigratedDatabase, data: Data, exact: bool, name: str) -> None:
    rows, _, actor = data
    query = UsageQuery(**QUERIES[name])
    mine = matching(rows, query)
    with db.session() as session:
        costs = cost_by_provider(session, actor, query)
        calls = calls_over_time(session, actor, query)
        latency = latency_by_provider(session, actor, query)
        tokens = tokens_by_task(session, actor, query)
        services = cost_by_service(session, actor, query)
        tags = cost_by_tag(session, actor, query)

    cost: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for r in mine:
        cost[(period(r, query), r["provider_type"])][0] += r["cost_micro_usd"] or 0
        cost[(period(r, query), r["provider_type"])][1] += 1
    assert {(p.t, p.provider_type): [int(p.cost_usd * 1_000_000), p.calls] for p in costs} == cost

    per_period: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in mine:
        per_period[period(r, query)].append(r)
    assert {p.t for p in calls} >= set(per_period)  # every period is listed, idle ones as 0
    for point in calls:
        these = per_period.get(point.t, [])
        assert point.calls == len(these)
        assert point.failed == sum(r["status"] in ("error", "timeout") for r in these)
        assert point.rejected == sum(r["status"] == "rejected" for r in these)

    groups: dict[Any, list[int]] = defaultdict(list)
    for r in mine:
        if r["status"] not in ("rejected", "cancelled"):
            groups[(period(r, query), r["provider_type"])].append(r["latency_ms"])
    assert {(p.t, p.provider_type) for p in latency} == set(groups)
    for point in latency:
        values = groups[(point.t, point.provider_type)]
        assert point.calls == len(values)
        assert point.avg_ms == pytest.approx(sum(values) / len(values))
        check_percentiles(point.latency, values, exact)

    by_task: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in mine:
        by_task[r["task_type"]][0] += 1
        by_task[r["task_type"]][1] += r["input_tokens"]
        by_task[r["task_type"]][2] += r["output_tokens"]
    assert {t.task_type: [t.calls, t.input_tokens, t.output_tokens] for t in tokens} == by_task

    by: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in mine:  # a call counts for its service and for each of its tags
        for group in [("service", r["service"])] + [("tag", t) for t in r["tags"].split(",") if t]:
            by[group][0] += 1
            by[group][1] += r["cost_micro_usd"] or 0
            by[group][2] += r["total_tokens"]
    found = {("service", g.name): g for g in services} | {("tag", g.name): g for g in tags}
    assert {
        k: [g.calls, int(g.cost_usd * 1_000_000), g.total_tokens] for k, g in found.items()
    } == by
    assert [g.cost_usd for g in services] == sorted((g.cost_usd for g in services), reverse=True)


def test_per_config_usage_with_limits_and_todays_use(db: MigratedDatabase, data: Data) -> None:
    rows, configs, actor = data
    now = T0 + 2 * D + 5 * H
    with db.session() as session, session.begin():
        session.add_all(
            [
                QuotaCounter(config_id=configs["openai"], day=now.date(), used_tokens=700),
                QuotaCounter(config_id=configs["openai"], day=T0.date(), used_tokens=300),
                QuotaCounter(config_id=configs["openai"], day=date(2026, 2, 27), used_tokens=99),
            ]
        )
    query = UsageQuery(**QUERIES["ragged"])
    mine = matching(rows, query)
    with db.session() as session:
        table = {row.config_id: row for row in config_usage(session, actor, query, now=now)}
    assert set(table) == {0, *configs.values()}
    for config_id, row in table.items():
        these = [r for r in mine if (r["provider_config_id"] or 0) == config_id]
        assert row.calls == len(these)
        assert row.succeeded == sum(r["status"] == "success" for r in these)
        assert row.cost_usd == Decimal(sum(r["cost_micro_usd"] or 0 for r in these)) / 1_000_000
        measured = latencies(these)
        assert row.avg_latency_ms == pytest.approx(sum(measured) / len(measured))
    openai = table[configs["openai"]]
    assert (openai.daily_token_limit, openai.monthly_token_limit) == (1_000_000, 9_000_000)
    assert (openai.used_today, openai.used_this_month) == (700, 1000)  # February's 99 is out
    assert table[0].name == "(no stored config)" and table[0].is_active is None


def test_the_seed_monitoring_queries(db: MigratedDatabase, data: Data) -> None:
    rows, _, actor = data
    now = T0 + 2 * D + 5 * H + timedelta(minutes=42)
    with db.session() as session:
        costs = daily_cost_by_provider(session, actor, days=30, now=now)
        errors = error_rate_by_provider(session, actor, days=7, now=now)
        trend = latency_trend(session, actor, days=7, now=now)

    month = in_range(rows, now - 30 * D, now)
    daily: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in month:
        daily[(r["created_at"].date(), r["provider_type"])][0] += r["cost_micro_usd"] or 0
        daily[(r["created_at"].date(), r["provider_type"])][1] += 1
    assert [(p.t, p.provider_type) for p in costs] == sorted(
        daily, key=lambda k: (k[0], daily[k][0]), reverse=True
    )  # newest day first, then the costliest provider
    assert {(p.t, p.provider_type): [int(p.cost_usd * 1_000_000), p.calls] for p in costs} == daily

    week = in_range(rows, now - 7 * D, now)
    for rate in errors:
        these = [r for r in week if r["provider_type"] == rate.provider_type]
        failed = sum(r["status"] in ("error", "timeout") for r in these)
        assert (rate.total_calls, rate.failed_calls) == (len(these), failed)
        assert rate.error_rate_pct == pytest.approx(100 * failed / len(these))
    assert {e.provider_type for e in errors} == {r["provider_type"] for r in week}

    for point in trend:
        values = [
            r["latency_ms"]
            for r in week
            if r["created_at"].date() == point.t
            and r["provider_type"] == point.provider_type
            and r["status"] not in ("rejected", "cancelled")
        ]
        check_percentiles(point.latency, values, exact=True)


def test_the_report_and_filter_options(db: MigratedDatabase, data: Data) -> None:
    rows, configs, actor = data
    query = UsageQuery(**QUERIES["whole days"])
    with db.session() as session:
        report = usage_report(session, actor, query)
        options = filter_options(session, actor)
    assert report.headline.current.calls == len(matching(rows, query))
    assert any("demo data" in note for note in report.notes)
    assert {c for c, _ in options.configs} == {0, *configs.values()}
    assert "some-other-model" in options.models
    assert options.statuses == ["success", "error", "timeout", "rejected", "cancelled"]
    assert options.services == ["", "billing-api", "cv-builder"]
    assert options.tags == ["feature=cover_letter", "feature=cv", "team=growth"]


def test_an_empty_range_reads_as_zero_and_bad_ranges_are_refused(
    db: MigratedDatabase, data
) -> None:
    _, _, actor = data
    query = UsageQuery(start=T0 + 30 * D, end=T0 + 31 * D)
    with db.session() as session:
        report = usage_report(session, actor, query)
    assert report.empty and report.headline.current.success_rate is None
    assert report.headline.current.latency.p50 is None
    assert report.cost_by_provider == [] and report.latency_by_provider == []
    assert [p.calls for p in report.calls_over_time] == [0] * 24  # one a day, by the hour
    with pytest.raises(ValueError, match="empty"):
        UsageQuery(start=T0, end=T0)
    with pytest.raises(ValueError, match="timezone"):
        UsageQuery(start=datetime(2026, 1, 1), end=datetime(2026, 1, 2))  # noqa: DTZ001


def test_only_signed_in_readers_may_ask(db: MigratedDatabase, data: Data) -> None:
    query = UsageQuery(**QUERIES["whole days"])
    with db.session() as session, pytest.raises(PermissionDenied):
        totals(session, Actor(label="ghost", user_id=999_999), query)
