"""What the console's usage queries answer: the range asked for (UsageQuery) and the figures
for it (Totals, Headline, chart points, per-config use, the whole UsageReport). Plain values
only; core/usage/queries.py computes them.

Definitions: *calls* are all attempts (usage rows); *succeeded*, *failed* (error or timeout),
*rejected* (over a token limit, never sent) and *cancelled* (by the caller, mid-call) split
them, so success rate + error rate + rejected and cancelled shares = 1. Latency figures cover
the calls a provider answered or failed (not the rejected or cancelled).
Cost sums the priced calls; calls of unpriced models are counted in `unpriced_calls`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.models import (
    utcnow,
)
from core.pricing import from_micro_usd
from core.quota.forecast import Forecast
from core.usage.rollup import (
    Grain,
    UsageFilter,
)

HOURLY_UP_TO = timedelta(days=2)  # longer ranges are charted by day


NO_CONFIG = 0


APPROXIMATE_NOTE = (
    "Latency percentiles marked ≈ are estimated from latency histograms (within {:.0%} of the "
    "true value) because the range holds more than {:,} calls; counts, costs, tokens, rates and "
    "average latency are always exact."
)
PRUNED_NOTE = (
    "Raw rows before {} were pruned; latency percentiles marked ≈ come from histograms (within "
    "{:.0%} of the true value). Counts, costs, tokens, rates and average latency are exact."
)


@dataclass(frozen=True)
class UsageQuery:
    """A time range [start, end) (aware datetimes) and optional filters."""

    start: datetime
    end: datetime
    provider_type: str | None = None
    config_id: int | None = None  # NO_CONFIG (0): calls without a stored config
    model_name: str | None = None
    task_type: str | None = None
    status: str | None = None
    service: str | None = None  # "" selects calls that named none (core/usage/attribution.py)
    tag: str | None = None  # "key=value": calls with that tag
    grain: Grain | None = None  # None: by hour up to two days, by day beyond

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware (UTC)")
        if self.start >= self.end:
            raise ValueError("the range is empty: start must be before end")

    @classmethod
    def last(cls, period: timedelta, now: datetime | None = None, **filters: Any) -> UsageQuery:
        """The `period` up to `now` (default: this instant)."""
        end = now or utcnow()
        return cls(end - period, end, **filters)

    @property
    def bucket(self) -> Grain:
        if self.grain is not None:
            return self.grain
        return "hour" if self.end - self.start <= HOURLY_UP_TO else "day"

    @property
    def where(self) -> UsageFilter:
        return UsageFilter(
            self.provider_type,
            self.config_id,
            self.model_name,
            self.task_type,
            self.status,
            self.service,
            self.tag,
        )

    def previous(self) -> UsageQuery:
        """The period of equal length just before this one, with the same filters."""
        length = self.end - self.start
        return replace(self, start=self.start - length, end=self.start, grain=self.bucket)


@dataclass(frozen=True)
class Percentiles:
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    exact: bool = True


@dataclass(frozen=True)
class Totals:
    """Everything the headline shows, for one range."""

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    cancelled: int = 0
    priced_calls: int = 0
    cost_micro_usd: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    # Of input_tokens: read from / written to the providers' prompt caches; of output_tokens:
    # thinking; and what the cache saved (negative: cache writes cost more than reads saved).
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_savings_micro_usd: int = 0
    measured_calls: int = 0  # reached a provider: the latency figures' base
    latency_ms_sum: int = 0
    demo_calls: int = 0
    latency: Percentiles = field(default_factory=Percentiles)

    @property
    def cost_usd(self) -> Decimal:
        return from_micro_usd(self.cost_micro_usd) or Decimal(0)

    @property
    def cache_savings_usd(self) -> Decimal:
        return from_micro_usd(self.cache_savings_micro_usd) or Decimal(0)

    @property
    def cached_share(self) -> float | None:
        """The part of the input read from a prompt cache (None without input)."""
        return self.cached_input_tokens / self.input_tokens if self.input_tokens else None

    @property
    def unpriced_calls(self) -> int:
        return self.calls - self.priced_calls

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.calls if self.calls else None

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.calls if self.calls else None

    @property
    def avg_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.measured_calls if self.measured_calls else None


@dataclass(frozen=True)
class Headline:
    current: Totals
    previous: Totals

    def change(self, metric: str) -> float | None:
        """Relative change of a count or amount (0.25 = +25%); for a rate, the difference
        in percentage points over 100 (0.02 = +2 points). None without a previous figure."""
        now, before = _metric(self.current, metric), _metric(self.previous, metric)
        if now is None or before is None:
            return None
        if metric.endswith("_rate"):
            return now - before
        return (now - before) / before if before else None


def _metric(totals: Totals, metric: str) -> float | None:
    if metric.startswith("p") and metric[1:].isdigit():
        return getattr(totals.latency, metric)
    value = getattr(totals, metric)
    return None if value is None else float(value)


@dataclass(frozen=True)
class CostPoint:
    t: date | datetime
    provider_type: str
    cost_usd: Decimal
    calls: int
    priced_calls: int


@dataclass(frozen=True)
class CallsPoint:
    t: date | datetime
    calls: int
    succeeded: int
    failed: int
    rejected: int

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.calls if self.calls else None


@dataclass(frozen=True)
class LatencyPoint:
    t: date | datetime
    provider_type: str
    calls: int
    avg_ms: float | None
    latency: Percentiles


@dataclass(frozen=True)
class TaskTokens:
    task_type: str
    calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class GroupCost:
    """Calls, cost and tokens of one service (or one tag) over the range."""

    name: str  # the service ("" for calls that named none) or the "key=value" tag
    calls: int
    cost_usd: Decimal
    total_tokens: int


@dataclass(frozen=True)
class ConfigUsage:
    """One row of the per-config table: usage in the range, and limits with current use."""

    config_id: int
    name: str
    provider_type: str
    model_name: str
    is_active: bool | None  # None: no stored config (legacy env, or deleted)
    calls: int
    succeeded: int
    cost_usd: Decimal
    measured_calls: int
    latency_ms_sum: int
    daily_token_limit: int | None = None
    monthly_token_limit: int | None = None
    used_today: int = 0  # tokens, UTC day (from the quota counters)
    used_this_month: int = 0
    forecasts: tuple[Forecast, ...] = ()  # each limit and budget: used, and when it is reached

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.calls if self.calls else None

    @property
    def avg_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.measured_calls if self.measured_calls else None


@dataclass(frozen=True)
class UsageReport:
    """All the usage page shows for one query."""

    query: UsageQuery
    headline: Headline
    cost_by_provider: list[CostPoint]
    calls_over_time: list[CallsPoint]
    latency_by_provider: list[LatencyPoint]
    tokens_by_task: list[TaskTokens]
    configs: list[ConfigUsage]
    notes: list[str]
    cost_by_service: list[GroupCost] = field(default_factory=list)  # dearest first
    cost_by_tag: list[GroupCost] = field(default_factory=list)  # a call counts for each tag

    @property
    def empty(self) -> bool:
        return self.headline.current.calls == 0


@dataclass(frozen=True)
class FilterOptions:
    providers: list[str]
    configs: list[tuple[int, str]]  # (id, label); NO_CONFIG for calls without a stored config
    models: list[str]
    tasks: list[str]
    statuses: list[str]
    services: list[str] = field(default_factory=list)  # every service named ("" for none)
    tags: list[str] = field(default_factory=list)  # every "key=value" used
