"""Demo usage rows as a DataFrame: which models (DemoModel, their traffic shares, latencies,
error and timeout rates), business-hours traffic, an afternoon-long incident, and costs from
genai-prices (core.pricing). core/usage/demo.py stores them."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from core.models import UsageSource
from core.pricing import estimate_cost_usd

CHUNK = 200_000  # rows generated at a time
COLUMNS = (
    "user_id", "provider_config_id", "provider_type", "model_name", "task_type", "input_tokens",
    "output_tokens", "total_tokens", "cost_micro_usd", "status", "error_type", "error_message",
    "latency_ms", "source", "created_at", "cached_input_tokens", "cache_savings_micro_usd",
    "service", "tags",
)  # fmt: skip


@dataclass(frozen=True)
class DemoModel:
    provider_type: str
    model_name: str
    name: str
    tasks: tuple[str, ...]
    share: float  # of all calls
    first_token_ms: float  # latency ≈ first_token_ms + output tokens × ms_per_token, noisy
    ms_per_token: float
    error_rate: float
    timeout_rate: float
    daily_limit: int | None = None
    monthly_limit: int | None = None


MODELS = (
    DemoModel("openai", "gpt-4o-mini", "Demo · GPT-4o mini", ("extraction", "validation"),
              0.30, 420, 7, 0.015, 0.003, 4_000_000, 80_000_000),
    DemoModel("openai", "gpt-4o", "Demo · GPT-4o", ("cv_draft", "cover_letter"),
              0.12, 550, 7, 0.012, 0.004),
    DemoModel("claude", "claude-3-5-haiku-latest", "Demo · Claude Haiku",
              ("extraction", "cover_letter"), 0.18, 520, 8, 0.02, 0.004, 3_000_000),
    DemoModel("claude", "claude-sonnet-4-0", "Demo · Claude Sonnet", ("cv_draft",),
              0.10, 800, 9, 0.018, 0.008, None, 40_000_000),
    DemoModel("gemini", "gemini-2.5-flash", "Demo · Gemini Flash", ("extraction", "validation"),
              0.22, 380, 4, 0.03, 0.005, 5_000_000),
    DemoModel("gemini", "gemini-2.5-pro", "Demo · Gemini Pro", ("cv_draft", "validation"),
              0.08, 1500, 6, 0.025, 0.012),
)  # fmt: skip


# Median input and output tokens per task.
TASK_TOKENS = {
    "extraction": (1800, 220),
    "cv_draft": (2600, 480),
    "cover_letter": (1500, 320),
    "validation": (1100, 40),
}


# Relative traffic per UTC hour: a working day in Europe with the Americas' afternoon behind it.
HOUR_WEIGHT = np.array(
    [0.15, 0.1, 0.1, 0.1, 0.15, 0.25, 0.45, 0.7, 0.9, 1.0, 1.0, 0.95,
     0.9, 0.95, 1.0, 1.0, 0.95, 0.85, 0.7, 0.55, 0.45, 0.35, 0.25, 0.2]
)  # fmt: skip


WEEKEND_WEIGHT = 0.4


REJECTED_RATE = 0.004  # only for models with a limit


# Share of a task's calls whose prompt starts with a prefix the provider has cached (the same
# long instructions each time), and how much of their input that prefix is.
CACHE_HITS = {"extraction": 0.55, "validation": 0.5, "cv_draft": 0.2, "cover_letter": 0.25}
CACHED_SHARE = (0.5, 0.9)


def generate(
    days: float,
    calls: int,
    config_ids: dict[str, int | None],
    now: datetime,
    seed: int | None = None,
    chunk: int = CHUNK,
) -> Iterator[pd.DataFrame]:
    """`calls` demo rows over [now - days, now), oldest first, in frames of about `chunk` rows
    (as a service writes them: in time order). `config_ids` maps MODELS' model names to ids."""
    rng = np.random.default_rng(seed)
    rates = {m.model_name: _rates(m) for m in MODELS}
    starts, lengths, weights = _hours(days, now)
    counts = rng.multinomial(calls, weights / weights.sum())
    # Consecutive runs of hours holding about `chunk` rows each.
    group = np.cumsum(counts) // max(chunk, 1)
    for g in np.unique(group):
        mine = group == g
        epoch = np.repeat(starts[mine], counts[mine])
        epoch += rng.random(epoch.size) * np.repeat(lengths[mine], counts[mine])
        if epoch.size:
            micros = np.sort((epoch * 1e6).astype(np.int64))
            yield _frame(rng, micros, days, now, config_ids, rates)


def _hours(days: float, now: datetime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start (epoch s), length (s) and traffic weight of each hour-long cell of the period:
    the hour of day, weekends and a growth trend shape it."""
    span = days * 86_400
    first = now.timestamp() - span
    starts = first + np.arange(int(np.ceil(span / 3600))) * 3600.0
    lengths = np.minimum(3600.0, now.timestamp() - starts)
    middle = starts + lengths / 2
    hour = (middle // 3600 % 24).astype(int)
    weekday = (middle // 86_400 + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    weights = HOUR_WEIGHT[hour] * np.where(weekday >= 5, WEEKEND_WEIGHT, 1.0)
    weights *= (0.75 + 0.25 * (middle - first) / span) * lengths / 3600
    return starts, lengths, weights


Rates = tuple[float, float, float]


def _rates(model: DemoModel) -> Rates | None:
    """Micro-dollars per input, output and cached input token, from genai-prices (None:
    unpriced)."""
    probe = 10_000  # below every long-context tier
    price = functools.partial(estimate_cost_usd, model.provider_type, model.model_name)
    costs = (price(probe, 0), price(0, probe), price(probe, 0, cached_input_tokens=probe))
    if any(cost is None for cost in costs):
        return None
    return tuple(float(cost) * 1e6 / probe for cost in costs)  # type: ignore[return-value, arg-type]


def _frame(
    rng: np.random.Generator,
    micros: np.ndarray,
    days: float,
    now: datetime,
    config_ids: dict[str, int | None],
    rates: dict[str, Rates | None],
) -> pd.DataFrame:
    size = micros.size
    which = rng.choice(len(MODELS), size=size, p=[m.share for m in MODELS])
    task, tokens_in, tokens_out = _tasks_and_tokens(rng, which)
    latency, outcome = _outcomes(rng, which, micros, days, now, tokens_out)
    ok, failed, timed_out, rejected = outcome
    tokens_in, tokens_out = np.where(ok, tokens_in, 0), np.where(ok, tokens_out, 0)
    hit = rng.random(size) < np.array([CACHE_HITS[t] for t in task])
    cached = np.where(hit, tokens_in * rng.uniform(*CACHED_SHARE, size), 0).astype(np.int64)
    cost, savings = _costs(which, ok, (tokens_in, tokens_out, cached), rates)
    status = np.select([ok, failed, timed_out], ["success", "error", "timeout"], "rejected")
    error_type, message = _errors(rng, failed, timed_out, rejected)
    ids = pd.array([config_ids.get(m.model_name) for m in MODELS], dtype="Int64")[which]
    return pd.DataFrame(
        {
            "user_id": rng.integers(1, 400, size),
            "provider_config_id": ids,
            "provider_type": np.array([m.provider_type for m in MODELS])[which],
            "model_name": np.array([m.model_name for m in MODELS])[which],
            "task_type": task,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
            "cost_micro_usd": cost,
            "status": status,
            "error_type": error_type,
            "error_message": message,
            "latency_ms": np.rint(latency).astype(np.int64),
            "source": UsageSource.DEMO.value,
            "created_at": pd.to_datetime(micros, unit="us", utc=True),
            "cached_input_tokens": cached,
            "cache_savings_micro_usd": savings,
            **_attribution(rng, task),
        },
        columns=list(COLUMNS),
    )


# The service that makes each task's calls, and the tags it sets (core/usage/attribution.py).
SERVICES = {
    "extraction": "jobs-ingest",
    "cv_draft": "cv-builder",
    "cover_letter": "cv-builder",
    "validation": "photo-check",
}
UNNAMED = 0.05  # calls from scripts that name no service
PRO = 0.3  # calls for users on the paid plan


def _attribution(rng: np.random.Generator, task: np.ndarray) -> dict[str, np.ndarray]:
    size = task.size
    service = np.array([SERVICES[t] for t in task], dtype=object)
    unnamed = rng.random(size) < UNNAMED
    plan = np.where(rng.random(size) < PRO, "plan=pro", "plan=free")
    tags = np.array([f"feature={t},{p}" for t, p in zip(task, plan, strict=True)], dtype=object)
    return {
        "service": np.where(unnamed, "", service).astype(object),
        "tags": np.where(unnamed, "", tags).astype(object),
    }


def _tasks_and_tokens(
    rng: np.random.Generator, which: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each call's task (among its model's) and its input and output tokens."""
    tasks = list(TASK_TOKENS)
    task_index = np.zeros(which.size, dtype=np.int64)
    for i, model in enumerate(MODELS):
        mine = which == i
        choices = [tasks.index(t) for t in model.tasks]
        task_index[mine] = rng.choice(choices, size=int(mine.sum()))
    task = np.array(tasks, dtype=object)[task_index]
    medians = np.array([TASK_TOKENS[t] for t in tasks], dtype=float)[task_index]
    tokens_in = np.maximum(20, rng.lognormal(np.log(medians[:, 0]), 0.45)).astype(np.int64)
    tokens_out = np.maximum(1, rng.lognormal(np.log(medians[:, 1]), 0.45)).astype(np.int64)
    return task, tokens_in, tokens_out


def _outcomes(
    rng: np.random.Generator,
    which: np.ndarray,
    micros: np.ndarray,
    days: float,
    now: datetime,
    tokens_out: np.ndarray,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each call's latency and outcome masks (ok, failed, timed out, rejected)."""
    size = which.size
    first = np.array([m.first_token_ms for m in MODELS])[which]
    per_token = np.array([m.ms_per_token for m in MODELS])[which]
    # An answer slower than the 60 s timeout would have timed out: answers stay below it.
    latency = (first + tokens_out * per_token) * rng.lognormal(0.0, 0.25, size)
    latency = np.minimum(latency, 59_000)

    # An incident: one afternoon, a third of the way back, Gemini Flash fails and slows down.
    incident_start = now.timestamp() - days * 86_400 / 3
    incident = (
        (np.array([m.model_name for m in MODELS])[which] == "gemini-2.5-flash")
        & (micros >= incident_start * 1e6)
        & (micros < (incident_start + 5 * 3600) * 1e6)
    )
    latency = np.where(incident, latency * 1.8, latency)
    error_rate = np.array([m.error_rate for m in MODELS])[which] * np.where(incident, 8, 1)
    timeout_rate = np.array([m.timeout_rate for m in MODELS])[which]
    limited = np.array([m.daily_limit or m.monthly_limit for m in MODELS], dtype=bool)[which]
    draw = rng.random(size)
    rejected = limited & (draw < REJECTED_RATE)
    failed = ~rejected & (draw < REJECTED_RATE + error_rate)
    timed_out = ~rejected & ~failed & (draw < REJECTED_RATE + error_rate + timeout_rate)
    ok = ~(rejected | failed | timed_out)

    latency = np.where(failed, rng.lognormal(np.log(350), 0.8, size), latency)
    latency = np.where(timed_out, 60_000 + rng.integers(0, 1500, size), latency)
    latency = np.where(rejected, 0, latency)
    return latency, (ok, failed, timed_out, rejected)


def _costs(
    which: np.ndarray,
    ok: np.ndarray,
    tokens: tuple[np.ndarray, np.ndarray, np.ndarray],
    rates: dict[str, Rates | None],
) -> tuple[Any, Any]:
    """Micro-dollars per call at genai-prices' rates (`tokens`: input, output and cached
    input), and what the cache saved on calls that read from it; NA for calls of unpriced
    models (and for savings, calls that read no cache)."""
    tokens_in, tokens_out, cached = tokens
    cost = pd.array(np.zeros(which.size, dtype=np.int64), dtype="Int64")
    cost[:] = pd.NA
    savings = cost.copy()
    for i, model in enumerate(MODELS):
        rate = rates[model.model_name]
        mine = (which == i) & ok
        if rate is not None:
            full, out, read = rate
            uncached = tokens_in[mine] * full + tokens_out[mine] * out
            cost[mine] = np.rint(uncached - cached[mine] * (full - read))
            hits = mine & (cached > 0)
            savings[hits] = np.rint(tokens_in[hits] * full + tokens_out[hits] * out) - cost[hits]
    return cost, savings


def _errors(
    rng: np.random.Generator, failed: np.ndarray, timed_out: np.ndarray, rejected: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each failed call's error type and message (None for the others)."""
    server_error = rng.random(failed.size) < 0.7
    kinds = [failed & server_error, failed, timed_out, rejected]
    error_type = np.select(kinds, ["server_error", "rate_limited", "timeout", "quota"], None)
    message = np.select(
        kinds,
        [
            "demo: the provider answered 503 Service Unavailable",
            "demo: the provider answered 429 Too Many Requests",
            "demo: no answer within 60 s",
            "daily or monthly token limit reached",
        ],
        None,
    )
    return error_type, message
