"""The Usage page in AppTest: an analyst sees the figures, charts, config table and export;
the range and the filters change the figures; an empty database says how to get demo data."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
import streamlit as st
import time_machine
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui
from core.access import Actor
from core.models import AdminActionLog, ProviderConfig, QuotaCounter, UsageLog, utcnow
from core.usage import export
from core.usage.export import COLUMNS, export_csv
from core.usage.queries import usage_report
from core.usage.report import UsageQuery
from core.usage.retention import cutoff_for, prune
from tests.support.pages import Console
from tests.support.usage import add_configs, in_range, insert_out_of_order, random_rows, raw_rows

PAGE = "pages/usage.py"
DAYS_30 = timedelta(days=30)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    st.cache_data.clear()  # the page caches reports for 30 s, keyed by range and filters
    yield
    st.cache_data.clear()


def seed(console: Console) -> list[dict[str, Any]]:
    now = utcnow()
    configs = add_configs(console.db)
    rows = random_rows(random.Random(21), 300, now - timedelta(days=20), now, configs)
    insert_out_of_order(console.db, [r for r in rows if r["created_at"] < now])
    return raw_rows(console.db)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label.endswith(label))


def window(at: AppTest) -> tuple[datetime, datetime]:
    """The range the page says it shows (its end is the next whole minute, so the test cannot
    work it out from its own clock)."""
    for caption in at.caption:
        if found := re.match(r"(\S+ \S+) – (\S+ \S+) UTC\.", caption.value):
            first, last = (datetime.fromisoformat(t).replace(tzinfo=UTC) for t in found.groups())
            return first, last
    raise AssertionError("the page does not say which range it shows")


def test_an_analyst_sees_the_figures_charts_and_export(console: Console) -> None:
    rows = seed(console)
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Usage"
    assert metric(at, "Calls") == f"{len(rows):,}"  # the last 30 days hold every row
    cost = sum(r["cost_micro_usd"] or 0 for r in rows) / 1_000_000
    assert metric(at, "Cost (USD)") == f"${cost:,.2f}"
    assert len(at.get("plotly_chart")) == 6  # over time, by task, then cost by service and by tag
    table = at.dataframe[0].value
    assert set(table["Config"]) == {
        "openai config",
        "claude config",
        "gemini config",
        "(no stored config)",
    }
    assert at.dataframe[0].proto.placeholder == "—"  # for what has no value, not "None"
    limits = at.dataframe[1].value  # each limit and budget, with its use and forecast
    assert limits.to_dict("records") == [
        {
            "Config": "openai config",
            "Limit": "Daily token limit",
            "Used": "0 of 1,000,000 tokens",  # these rows were stored, not routed
            "Of limit": 0.0,
            "Forecast": "not reached today at the last 7 days' rate",
        },
        {
            "Config": "openai config",
            "Limit": "Monthly token limit",
            "Used": "0 of 9,000,000 tokens",
            "Of limit": 0.0,
            "Forecast": "not reached this month at the last 7 days' rate",
        },
    ]
    assert any("demo data" in c.value for c in at.caption)  # some rows are marked demo
    assert at.get("download_button")[0].label == "Export CSV"


def test_the_page_splits_cost_by_service_and_tag_and_filters_by_them(console: Console) -> None:
    rows = seed(console)
    with console.db.session() as session, session.begin():  # a config nothing has called
        session.add(
            ProviderConfig(
                provider_type="openai",
                model_name="gpt-4o",
                display_name="idle config",
                api_key_encrypted="x" * 20,
                key_last4="xxxx",
            )
        )
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()
    start, end = window(at)
    headings = [h.value for h in at.subheader]
    assert "Cost by service" in headings and "Cost by tag" in headings
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    by_service = json.loads(charts[4])["data"][0]
    assert set(by_service["y"]) == {"(no service named)", "billing-api", "cv-builder"}

    service = next(s for s in at.selectbox if s.label == "Service")
    assert service.options == ["(any)", "(no service named)", "billing-api", "cv-builder"]
    service.select("billing-api").run()
    assert metric(at, "Calls") == f"{len(in_range(rows, start, end, service='billing-api')):,}"
    next(s for s in at.selectbox if s.label == "Tag").select("team=growth").run()
    both = in_range(rows, start, end, service="billing-api", tag="team=growth")
    assert both and metric(at, "Calls") == f"{len(both):,}"
    # A config nothing called is listed idle: no success rate or latency, which the browser
    # shows as "—" (the table's placeholder), not "None".
    (idle,) = at.dataframe[0].value.query("Config == 'idle config'").to_dict("records")
    assert idle["Calls"] == 0 and pd.isna(idle["Avg latency (ms)"])
    assert at.dataframe[0].proto.placeholder == "—"
    service.select("(no service named)").run()
    assert (
        metric(at, "Calls") == f"{len(in_range(rows, start, end, service='', tag='team=growth')):,}"
    )
    assert not at.exception


def test_limits_and_budgets_show_their_use_and_forecast(console: Console) -> None:
    configs = add_configs(console.db)
    noon = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    rows = random_rows(random.Random(5), 20, noon - timedelta(days=3), noon, configs)
    insert_out_of_order(console.db, rows)  # the page shows its tables for a range with calls
    with console.db.session() as session, session.begin():
        config = session.get_one(ProviderConfig, configs["claude"])
        config.created_at = noon - timedelta(days=30)
        config.daily_budget_micro_usd, config.monthly_budget_micro_usd = 1_000_000, 30_000_000
        for back in range(1, 8):  # $1.50 a day for the last 7 days, and $0.75 this morning
            day = (noon - timedelta(days=back)).date()
            session.add(QuotaCounter(config_id=config.id, day=day, used_micro_usd=1_500_000))
        session.add(QuotaCounter(config_id=config.id, day=noon.date(), used_micro_usd=750_000))
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    with time_machine.travel(noon, tick=False):
        at = console.page(PAGE, analyst).run()
    limits = at.dataframe[1].value.set_index(["Config", "Limit"])
    daily = limits.loc[("claude config", "Daily budget")]
    assert (daily["Used"], daily["Of limit"]) == ("$0.75 of $1.00", 0.75)
    assert daily["Forecast"] == "reached about 16:00 UTC"  # $0.25 left at $1.50 a day: 4 hours
    assert limits.loc[("claude config", "Monthly budget"), "Used"].endswith(" of $30.00")


def test_the_range_and_the_filters_change_the_figures(console: Console) -> None:
    rows = seed(console)
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()

    at.segmented_control(key="usage_range").set_value("24 h").run()
    start, end = window(at)
    assert end - start == timedelta(hours=24)
    assert end - timedelta(minutes=1) <= utcnow() < end + timedelta(seconds=30)
    recent = in_range(rows, start, end)
    assert recent and len(recent) < len(rows)
    assert metric(at, "Calls") == f"{len(recent):,}"

    at.segmented_control(key="usage_range").set_value("90 d").run()
    next(s for s in at.selectbox if s.label == "Provider").select("openai").run()
    openai = [r for r in rows if r["provider_type"] == "openai"]
    assert not at.exception
    assert metric(at, "Calls") == f"{len(openai):,}"
    next(s for s in at.selectbox if s.label == "Status").select("success").run()
    succeeded = [r for r in openai if r["status"] == "success"]
    assert metric(at, "Calls") == f"{len(succeeded):,}"
    assert metric(at, "Success rate") == "100.0%"
    assert set(at.dataframe[0].value["Provider"]) <= {"openai", ""}


def test_a_filter_that_leaves_a_chart_empty_says_why_instead_of_empty_axes(
    console: Console,
) -> None:
    rows = seed(console)
    assert any(r["status"] == "error" for r in rows)
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()
    next(s for s in at.selectbox if s.label == "Status").select("error").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2  # calls and latency: failed calls have those
    said = [i.value for i in at.info]
    assert any(v.startswith("No cost to draw") for v in said)
    assert any(v.startswith("No tokens to draw") for v in said)
    next(s for s in at.selectbox if s.label == "Status").select("rejected").run()
    assert any(i.value.startswith("No latency to draw") for i in at.info)


def test_an_empty_console_says_how_to_see_the_charts(console: Console) -> None:
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()
    assert not at.exception
    assert "python -m core demo-data" in at.info[0].value
    assert not at.metric and not at.get("plotly_chart") and not at.get("download_button")


def test_filters_that_match_nothing_say_so(console: Console) -> None:
    seed(console)
    admin, _ = console.add_user("root")
    at = console.page(PAGE, admin).run()
    next(s for s in at.selectbox if s.label == "Provider").select("gemini").run()
    next(s for s in at.selectbox if s.label == "Model").select("gpt-4o-mini").run()
    assert not at.exception and not at.metric
    assert "No calls match these filters" in at.info[0].value


def test_nobody_signed_in_sees_nothing(console: Console) -> None:
    at = console.page(PAGE).run()
    assert at.warning[0].value == "Sign in first." and not at.metric


def test_the_export_holds_what_the_page_shows_and_is_audited(console: Console) -> None:
    rows = seed(console)
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    actor = Actor(label="ann", user_id=analyst)
    query = UsageQuery.last(timedelta(days=30), provider_type="claude")
    with console.db.session() as session, session.begin():
        report = usage_report(session, actor, query)
        text = export_csv(session, actor, report)
    table = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == list(COLUMNS)
    calls = next(r for r in table if r["section"] == "range" and r["metric"] == "calls")
    assert int(calls["value"]) == sum(r["provider_type"] == "claude" for r in rows)
    assert export.file_name(report) == (
        f"usage-{query.start:%Y%m%d-%H%M}-{query.end:%Y%m%d-%H%M}-claude.csv"
    )
    chosen = {r["metric"]: r["value"] for r in table if r["section"] == "selection"}
    assert chosen == {
        "start": query.start.isoformat(),
        "end": query.end.isoformat(),
        "provider_type": "claude",
    }
    for r in table:  # no float noise: at most 4 decimals
        if "." in r["value"] and r["metric"] not in ("start", "end"):
            assert len(r["value"].split(".")[1]) <= (6 if r["metric"] == "cost_usd" else 4)
    sections = {r["section"] for r in table}
    assert sections == {
        "selection",
        "range",
        "previous period",
        "cost by provider",
        "calls over time",
        "latency by provider",
        "tokens by task",
        "configs",
        "cost by service",
        "cost by tag",
    }
    assert {r["basis"] for r in table if r["metric"] == "p95_ms"} == {"exact"}
    # Every call is for one service (or none): the services' costs add up to the range's.
    by_service = {
        r["service"]: Decimal(r["value"])
        for r in table
        if r["section"] == "cost by service" and r["metric"] == "cost_usd"
    }
    cost = next(r for r in table if r["section"] == "range" and r["metric"] == "cost_usd")
    assert set(by_service) == {"", "billing-api", "cv-builder"}
    assert sum(by_service.values()) == Decimal(cost["value"])
    with console.db.session() as session:
        entry = session.scalars(
            select(AdminActionLog).where(AdminActionLog.action == "usage.exported")
        ).one()
    assert entry.actor_label == "ann" and entry.details["provider_type"] == "claude"


def test_big_token_counts_fit_their_tile() -> None:
    assert [ui.compact_count(n) for n in (999_999, 19_628_412, 2_500_000_000)] == [
        "999,999",
        "19.6 M",
        "2.50 B",
    ]


def test_the_page_says_what_the_prompt_cache_read_and_saved(console: Console) -> None:
    now = utcnow()
    configs = add_configs(console.db)
    rows = random_rows(random.Random(5), 60, now - timedelta(days=3), now, configs)
    for row in rows:
        row |= {"cached_input_tokens": 0, "cache_savings_micro_usd": None}
    for n, row in enumerate(r for r in rows if r["status"] == "success" and r["input_tokens"]):
        if n % 2:  # every other answered call read part of its prompt from a cache
            row["cached_input_tokens"] = row["input_tokens"] // 2
            row["cache_savings_micro_usd"] = 1_250
    insert_out_of_order(console.db, [r for r in rows if r["created_at"] < now])
    stored = raw_rows(console.db)
    cached = sum(r["cached_input_tokens"] or 0 for r in stored)
    saved = sum(r["cache_savings_micro_usd"] or 0 for r in stored) / 1_000_000
    total_in = sum(r["input_tokens"] for r in stored)
    assert cached and saved
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()
    assert not at.exception
    assert metric(at, "Saved by caching") == (f"${saved:,.2f}" if saved >= 1 else f"${saved:.3f}")
    line = next(c.value for c in at.caption if c.value.startswith("Prompt cache:"))
    assert f"{cached:,} of {total_in:,} input tokens ({cached / total_in:.1%})" in line
    assert line.endswith(f"that saved ${saved:.3f} against the same calls without the cache.")
    actor = Actor(label="ann", user_id=analyst)
    with console.db.session() as session, session.begin():
        text = export_csv(session, actor, usage_report(session, actor, UsageQuery.last(DAYS_30)))
    exported = {r["metric"]: r["value"] for r in csv.DictReader(io.StringIO(text))
                if r["section"] == "range"}  # fmt: skip
    assert int(exported["cached_input_tokens"]) == cached
    assert Decimal(exported["cache_savings_usd"]) == Decimal(round(saved * 1_000_000)) / 1_000_000


def test_a_range_without_cache_hits_says_so(console: Console) -> None:
    seed(console)
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()
    assert metric(at, "Saved by caching") == "$0.00"
    assert any(c.value.startswith("Prompt cache: no input tokens") for c in at.caption)


def test_the_charts_share_the_ranges_days_and_mark_the_day_still_under_way(
    console: Console,
) -> None:
    seed(console)
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()
    cost, calls, latency, *_ = (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    first, _ = window(at)
    # The cost chart starts where the calls chart does: on the range's first day.
    start = cost["layout"]["xaxis"]["range"][0]
    assert cost["layout"]["xaxis"]["range"] == calls["layout"]["xaxis"]["range"]
    assert start == f"{first - timedelta(days=1):%Y-%m-%d}T12:00:00"  # half a day before
    for figure in (cost, calls, latency):  # today, still under way, is shaded: not a collapse
        assert any(s["type"] == "rect" for s in figure["layout"]["shapes"])
        assert any(a["text"] == "so far" for a in figure["layout"]["annotations"])
    assert calls["layout"]["yaxis2"]["tickformat"] == ".1~%"  # 0.5%, 1%: not 0%, 1%, 1%, 2%
    # Latency: one small chart per provider, the percentiles told apart by colour.
    assert {t["yaxis"] for t in latency["data"]} == {"y", "y2", "y3"}
    assert len({t["line"]["color"] for t in latency["data"]}) == 3


def test_pruned_days_keep_their_totals_and_show_estimated_percentiles(console: Console) -> None:
    rows = seed(console)
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    cutoff = cutoff_for(10, utcnow())
    assert any(r["created_at"] < cutoff for r in rows)
    before = console.page(PAGE, analyst).run()
    assert metric_label(before, "p95 latency") == "p95 latency"  # exact: every raw row is there

    prune(console.db.engine, cutoff, actor=Actor(label="cli:test", is_operator=True))
    st.cache_data.clear()
    at = console.page(PAGE, analyst).run()

    assert not at.exception and not at.error
    assert len(raw_rows(console.db)) < len(rows)
    for label in ("Calls", "Cost (USD)", "Success rate"):
        assert metric(at, label) == metric(before, label), label
    assert metric_label(at, "p95 latency") == "≈ p95 latency"
    assert any(
        c.value.startswith(f"Raw rows before {cutoff.date()} were pruned; latency percentiles")
        for c in at.caption
    )


def metric_label(at: AppTest, label: str) -> str:
    return next(m.label for m in at.metric if m.label.endswith(label))


def test_the_console_prunes_to_the_retention_setting_in_the_background(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui import resources

    assert resources.usage_retention() is None  # unset: every row is kept
    st.cache_resource.clear()
    monkeypatch.setenv("AI_CONSOLE_USAGE_RETENTION_DAYS", "30")
    rounds = resources.usage_retention()
    assert rounds is not None
    rounds.stop()
    old = utcnow() - timedelta(days=40)
    with console.db.session() as session, session.begin():
        session.add(
            UsageLog(
                provider_type="openai",
                model_name="m",
                task_type="extraction",
                status="success",
                created_at=old,
            )
        )
    rounds._round()
    with console.db.session() as session:
        assert session.scalar(select(func.count()).select_from(UsageLog)) == 0
