"""Prometheus metrics for every provider attempt, with the names operators already query.

A backend service exposes them with one line at startup::

    import core.metrics; core.metrics.serve(9464)   # http://host:9464/metrics

(or mount `prometheus_client.make_asgi_app()` in an existing ASGI app).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from core.models import UNMEASURED_STATUSES

REQUESTS = Counter(
    "ai_provider_requests_total",
    "Provider attempts by outcome (success, error, timeout, rejected, cancelled).",
    ["provider_type", "task_type", "status"],
)
TOKENS = Counter(
    "ai_provider_tokens_used_total", "Tokens used (input + output).", ["provider_type"]
)
COST = Counter(
    "ai_provider_cost_usd_total",
    "Cost in USD of priced calls (genai-prices), counted as their usage rows are stored.",
    ["provider_type"],
)
LATENCY = Histogram(
    "ai_provider_latency_ms",
    "Latency of provider attempts in milliseconds.",
    ["provider_type"],
    buckets=(50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000),
)

USAGE_SPOOL_BYTES = Gauge(
    "ai_console_usage_spool_bytes",
    "Usage rows spooled on local disk and not yet stored in the database, in bytes.",
)
USAGE_DEAD_LETTERS = Counter(
    "ai_console_usage_dead_letters_total",
    "Usage rows the database refused, kept in the spool directory's dead-letter file.",
)


def observe(
    provider_type: str,
    task_type: str,
    status: str,
    total_tokens: int,
    latency_ms: int,
) -> None:
    """Count one attempt (its cost is counted when its row is stored: `stored_cost`)."""
    REQUESTS.labels(provider_type, task_type, status).inc()
    if total_tokens:
        TOKENS.labels(provider_type).inc(total_tokens)
    if status not in UNMEASURED_STATUSES:
        LATENCY.labels(provider_type).observe(latency_ms)


def stored_cost(provider_type: str, micro_usd: int | None) -> None:
    """Count the cost of a usage row just stored (priced by the usage writer)."""
    if micro_usd:
        COST.labels(provider_type).inc(micro_usd / 1_000_000)


def serve(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from other hosts
    """Expose /metrics on `port` from a background thread."""
    start_http_server(port, addr=addr)
