"""Usage (analysts and super-admins): cost, calls, tokens, success rate and latency for a time
range, with the change against the period before, charts, the per-config table with limit use,
and a CSV export of it all. Figures come from core.usage_queries (aggregated in the database)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import ui
from core.access import Actor
from core.models import UserRole, utcnow
from core.usage import export, queries
from core.usage.report import FilterOptions, Headline, Totals, UsageQuery, UsageReport

ui.through_the_app()

ANY = "(any)"
RANGES = {"24 h": timedelta(hours=24), "7 d": timedelta(days=7), "30 d": timedelta(days=30)}
RANGES |= {"90 d": timedelta(days=90), "Custom": None}
CACHE_SECONDS = 30


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _report(user_id: int, username: str, start: datetime, end: datetime, **filters: Any) -> Any:
    with ui.transaction() as session:
        query = UsageQuery(start, end, **filters)
        return queries.usage_report(session, Actor(label=username, user_id=user_id), query)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _options(user_id: int, username: str) -> Any:
    with ui.transaction() as session:
        return queries.filter_options(session, Actor(label=username, user_id=user_id))


def _range(choice: str | None) -> tuple[datetime, datetime]:
    # The end is the next whole minute, so reruns within a minute share one cached report.
    now = utcnow().replace(second=0, microsecond=0) + timedelta(minutes=1)
    if choice != "Custom":
        return now - RANGES[choice or "30 d"], now  # type: ignore[operator]
    today = now.date()
    days = st.date_input(
        "Dates (UTC)", value=(today - timedelta(days=6), today), max_value=today, key="usage_days"
    )
    first, last = (days[0], days[-1]) if isinstance(days, tuple) and days else (today, today)
    return _midnight(first), _midnight(last) + timedelta(days=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _filters(options: FilterOptions) -> dict[str, Any]:
    configs = dict(options.configs)
    columns = st.columns(5)
    picks = {
        "provider_type": columns[0].selectbox("Provider", [ANY, *options.providers]),
        "config_id": columns[1].selectbox(
            "Config", [ANY, *configs], format_func=lambda c: configs.get(c, c)
        ),
        "model_name": columns[2].selectbox("Model", [ANY, *options.models]),
        "task_type": columns[3].selectbox("Task", [ANY, *options.tasks]),
        "status": columns[4].selectbox("Status", [ANY, *options.statuses]),
    }
    if options.services != [""] or options.tags:  # some calls named who they were for
        columns = st.columns(5)
        picks["service"] = columns[0].selectbox(
            "Service", [ANY, *options.services], format_func=_service_name
        )
        picks["tag"] = columns[1].selectbox(
            "Tag", [ANY, *options.tags], help="Calls with this tag (a call may have several)."
        )
    return {name: value for name, value in picks.items() if value != ANY}


def _service_name(service: str) -> str:
    return service or NO_SERVICE


NO_SERVICE = "(no service named)"


def _percent(change: float | None) -> str | None:
    return None if change is None else f"{change:+.1%}"


def _headline(both: Headline) -> None:
    now, change = both.current, both.change
    approx = "" if now.latency.exact else "≈ "
    cells = [
        ("Cost (USD)", f"${now.cost_usd:,.2f}", _percent(change("cost_usd")), "inverse"),
        ("Calls", f"{now.calls:,}", _percent(change("calls")), "off"),
        ("Success rate", _rate(now.success_rate), _points(change("success_rate")), "normal"),
        (
            "Input tokens",
            ui.compact_count(now.input_tokens),
            _percent(change("input_tokens")),
            "off",
        ),
        (
            "Output tokens",
            ui.compact_count(now.output_tokens),
            _percent(change("output_tokens")),
            "off",
        ),
        (
            "Saved by caching",
            _money(now.cache_savings_usd),
            _percent(change("cache_savings_usd")),
            "normal",
        ),
        ("Avg latency", _ms(now.avg_latency_ms), _percent(change("avg_latency_ms")), "inverse"),
        (f"{approx}p50 latency", _ms(now.latency.p50), _percent(change("p50")), "inverse"),
        (f"{approx}p95 latency", _ms(now.latency.p95), _percent(change("p95")), "inverse"),
        (f"{approx}p99 latency", _ms(now.latency.p99), _percent(change("p99")), "inverse"),
    ]
    for row in (cells[:5], cells[5:]):
        for column, (label, value, delta, colour) in zip(st.columns(5), row, strict=False):
            column.metric(label, value, delta, delta_color=colour, border=True)  # type: ignore[arg-type]
    st.caption(_cache_line(now))
    if now.unpriced_calls:
        st.caption(f"{now.unpriced_calls:,} call(s) had no price (unknown model or no answer).")


def _money(amount: Decimal) -> str:
    """Dollars to the cent, or to a tenth of a cent below a dollar (cache savings are small)."""
    sign = "−" if amount < 0 else ""
    cents = f"{abs(amount):,.2f}" if abs(amount) >= 1 or amount == 0 else f"{abs(amount):.3f}"
    return f"{sign}${cents}"


def _cache_line(now: Totals) -> str:
    """What the providers' prompt caches did in the range, in one sentence."""
    if not now.cached_input_tokens and not now.cache_write_tokens:
        return "Prompt cache: no input tokens were read from a provider's cache in this range."
    share = now.cached_share or 0.0
    line = (
        f"Prompt cache: {now.cached_input_tokens:,} of {now.input_tokens:,} input tokens "
        f"({share:.1%}) were read from a provider's cache"
    )
    if now.cache_write_tokens:
        line += f" and {now.cache_write_tokens:,} written to it"
    return line + (
        f"; at each model's prices that saved {_money(now.cache_savings_usd)} "
        "against the same calls without the cache."
    )


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _points(change: float | None) -> str | None:
    return None if change is None else f"{change * 100:+.1f} pts"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def _charts(report: UsageReport) -> None:
    unit = "hour" if report.query.bucket == "hour" else "day"
    left, right = st.columns(2)
    costs = [{"t": p.t, "Provider": p.provider_type, "Cost (USD)": float(p.cost_usd)}
             for p in report.cost_by_provider]  # fmt: skip
    left.subheader(f"Cost per {unit}, by provider")
    if not any(c["Cost (USD)"] for c in costs):
        _nothing_to_draw(left, "No cost to draw: only answered calls of priced models cost money.")
    else:
        figure = _stacked(costs, "t", "Cost (USD)", "Provider", PROVIDER_COLOURS)
        left.plotly_chart(_over_time(figure, report), key="cost_chart")

    calls = report.calls_over_time
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    bars = go.Bar(x=[c.t for c in calls], y=[c.calls for c in calls], name="Calls")
    figure.add_trace(bars.update(marker_color=SAFE[0]))
    rate = [c.error_rate for c in calls]
    line = go.Scatter(x=[c.t for c in calls], y=rate, name="Error rate", line_color=SAFE[1])
    figure.add_trace(line, secondary_y=True)
    # '~' drops trailing zeros: 0%, 0.5%, 1%, not 0%, 1%, 1%, 2%.
    figure.update_yaxes(
        tickformat=".1~%", secondary_y=True, rangemode="tozero", tickmode="auto", showgrid=False
    )
    figure.update_yaxes(tickformat=",~", secondary_y=False)
    right.subheader(f"Calls and error rate per {unit}")
    right.plotly_chart(_over_time(figure, report), key="calls_chart")

    left, right = st.columns(2)
    points = [
        {"t": p.t, "Provider": p.provider_type, "Percentile": name, "ms": getattr(p.latency, name)}
        for p in report.latency_by_provider
        for name in ("p50", "p95", "p99")
    ]
    approximate = any(not p.latency.exact for p in report.latency_by_provider)
    left.subheader(f"{'≈ ' if approximate else ''}Latency percentiles per {unit}")
    if all(p["ms"] is None for p in points):
        _nothing_to_draw(
            left, "No latency to draw: none of these calls reached a provider (refused, cancelled)."
        )
    else:
        # Small multiples, one per provider, the percentiles in a colour-blind-safe palette.
        figure = px.line(
            points,
            x="t",
            y="ms",
            color="Percentile",
            facet_row="Provider",
            color_discrete_sequence=SAFE[2:],
        )
        figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
        figure.update_yaxes(title=None, tickformat=",~", rangemode="tozero")
        # No fixed axis range here: plotly.js then draws faceted lines empty.
        left.plotly_chart(_over_time(figure, report, fixed=False), key="latency_chart")

    tokens = [
        {"Task": t.task_type, "Kind": kind, "Tokens": getattr(t, f"{kind}_tokens")}
        for t in report.tokens_by_task
        for kind in ("input", "output")
    ]
    right.subheader("Tokens by task")
    if not any(t["Tokens"] for t in tokens):
        _nothing_to_draw(right, "No tokens to draw: calls that got no answer used none.")
    else:
        figure = _stacked(tokens, "Task", "Tokens", "Kind", {"input": SAFE[0], "output": SAFE[1]})
        right.plotly_chart(_tidy(figure), key="tokens_chart")


def _groups(report: UsageReport) -> None:
    """Cost by calling service and by tag over the range (core/usage/attribution.py)."""
    if not any(g.name for g in report.cost_by_service) and not report.cost_by_tag:
        st.caption(
            "No call in this range named its service or tags: pass `service=` and `tags=` to "
            "`generate` (or `Router(service=...)`, `AI_CONSOLE_SERVICE`) to split cost by them."
        )
        return
    left, right = st.columns(2)
    for column, title, groups, colour in (
        (left, "Cost by service", report.cost_by_service, SAFE[0]),
        (right, "Cost by tag", report.cost_by_tag, SAFE[2]),
    ):
        column.subheader(title)
        rows = [
            {"Name": _service_name(g.name) if groups is report.cost_by_service else g.name,
             "Cost (USD)": float(g.cost_usd), "Calls": g.calls}
            for g in groups
        ]  # fmt: skip
        if not any(r["Cost (USD)"] for r in rows):
            _nothing_to_draw(column, "No cost to draw for these calls.")
            continue
        figure = px.bar(
            rows[::-1],  # dearest on top
            x="Cost (USD)",
            y="Name",
            orientation="h",
            hover_data=["Calls"],
            color_discrete_sequence=[colour],
        )
        figure.update_xaxes(tickprefix="$", tickformat=",~")
        figure.update_yaxes(title=None, type="category")
        figure.update_layout(height=max(220, 60 + 32 * len(rows)))
        column.plotly_chart(_tidy(figure), key=f"{title.lower().replace(' ', '_')}_chart")
    if report.cost_by_tag:
        right.caption("A call with several tags counts for each.")


def _stacked(
    rows: list[dict[str, Any]], x: str, y: str, colour: str, colours: dict[str, str]
) -> go.Figure:
    return px.bar(rows, x=x, y=y, color=colour, barmode="stack", color_discrete_map=colours)


def _nothing_to_draw(column: Any, why: str) -> None:
    """An empty state instead of an empty chart with axes from −1 to 1."""
    column.info(why, icon=":material/query_stats:")


# Okabe-Ito's colour-blind-safe palette, in plotly's order of use.
SAFE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442")
PROVIDER_COLOURS = {"openai": SAFE[2], "claude": SAFE[1], "gemini": SAFE[0]}


def _over_time(figure: go.Figure, report: UsageReport, fixed: bool = True) -> go.Figure:
    """The range's own time axis (`fixed`: the same first and last hour or day on each chart,
    even where nothing happened), and its last period, still under way, shaded and marked."""
    query = report.query
    hourly = query.bucket == "hour"
    half = timedelta(minutes=30) if hourly else timedelta(hours=12)
    first, last = _floor(query.start, hourly), _floor(query.end - timedelta(microseconds=1), hourly)
    if fixed:
        figure.update_xaxes(range=[first - half, last + half])
    if query.end.astimezone(UTC).replace(tzinfo=None) < last + 2 * half:  # not over yet
        figure.add_vrect(
            x0=last - half,
            x1=last + half,
            fillcolor="grey",
            opacity=0.12,
            line_width=0,
            annotation_text="so far",
            annotation_position="top left",
        )
    return _tidy(figure)


def _floor(t: datetime, hourly: bool) -> datetime:
    """The start of the UTC hour or day `t` is in (the charts' periods), without its time
    zone: plotly.js reads no UTC offset in an axis range, and then draws a line chart empty."""
    t = t.astimezone(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    return t if hourly else t.replace(hour=0)


def _tidy(figure: go.Figure) -> go.Figure:
    legend = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0}  # above: no overlap
    return figure.update_layout(
        margin={"l": 0, "r": 20, "t": 30, "b": 0},
        legend=legend,
        legend_title_text="",
        xaxis_title=None,
    )


def _configs(report: UsageReport) -> None:
    st.subheader("Configs")
    st.dataframe(
        [
            {
                "Config": row.name,
                "Provider": row.provider_type,
                "Model": row.model_name,
                "Active": {True: "yes", False: "no", None: "–"}[row.is_active],
                "Calls": row.calls,
                "Success rate": row.success_rate,
                "Cost (USD)": float(row.cost_usd),
                "Avg latency (ms)": _rounded(row.avg_latency_ms),
            }
            for row in report.configs
        ],
        hide_index=True,
        width="stretch",
        placeholder="—",  # an idle config has no success rate or latency: "—", not "None"
        column_config={
            "Calls": st.column_config.NumberColumn(format="localized"),
            "Success rate": st.column_config.NumberColumn(format="percent"),
            "Cost (USD)": st.column_config.NumberColumn(format="dollar"),
            "Avg latency (ms)": st.column_config.NumberColumn(format="localized"),
        },
    )
    st.caption("For the selected range.")


def _limits(report: UsageReport) -> None:
    st.subheader("Limits and budgets")
    rows = [
        {
            "Config": row.name,
            "Limit": forecast.name.capitalize(),
            "Used": forecast.used_text,
            "Of limit": min(forecast.used / forecast.limit, 1.0) if forecast.limit else 1.0,
            "Forecast": str(forecast).removeprefix(forecast.name).lstrip(": ") or "reached",
        }
        for row in report.configs
        for forecast in row.forecasts
    ]
    if not rows:
        st.caption(
            "No config has a token limit or a dollar budget. Set them on the Providers page."
        )
        return
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={"Of limit": st.column_config.ProgressColumn(format="percent")},
    )
    st.caption(
        "Today's and this month's use (UTC), as the limits count them; the forecast is at the "
        "rate of the last 7 days."
    )


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


me = ui.require_user(UserRole.SUPER_ADMIN, UserRole.ANALYST)
st.title("Usage")
st.caption("Every provider call: cost, tokens, outcome and latency. Times and days are UTC.")

choice = st.segmented_control("Time range", list(RANGES), default="30 d", key="usage_range")
start, end = _range(choice)
filters = _filters(_options(me.id, me.username))
if "config_id" in filters:
    filters["config_id"] = int(filters["config_id"])

with st.spinner("Adding up usage…"):
    report: UsageReport = _report(me.id, me.username, start, end, **filters)

if report.empty:
    if filters:
        st.info("No calls match these filters in this range. Widen the range or clear a filter.")
    else:
        st.info(
            "No usage in this range yet. Calls routed through `core.routing` appear here within "
            "seconds. To explore the page first, fill it with sample data: "
            "`python -m core demo-data --days 60 --calls 40000` (60 days give the last 30 a "
            "period to compare with; `python -m core demo-data --purge` removes it again).",
            icon=":material/query_stats:",
        )
    st.stop()

_headline(report.headline)
previous = report.query.previous()
st.caption(
    f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC. Changes are against "
    f"{previous.start:%Y-%m-%d %H:%M} – {previous.end:%Y-%m-%d %H:%M}, the period of equal "
    "length before."
)
for note in report.notes:
    st.caption(note)
_charts(report)
_groups(report)
_configs(report)
_limits(report)

factory, exporter = ui.session_factory(), ui.actor(me)


def _csv() -> str:
    # Built when the button is clicked (on another thread), so the export is recorded then.
    with factory() as session, session.begin():
        return export.export_csv(session, exporter, report)


st.download_button(
    "Export CSV",
    data=_csv,
    file_name=export.file_name(report),
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
)
