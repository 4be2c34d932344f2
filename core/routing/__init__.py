"""core.routing: the library backend services import to call an AI provider for a task.

    from core.routing import Router
    router = Router.from_env()
    result = await router.generate("extraction", "Extract the job title from ...", user_id=42)

    async with router.stream("cv_draft", "Draft a CV summary for ...", user_id=42) as stream:
        async for text in stream:        # pieces as the provider sends them (streams.py)
            ...
    result = stream.result

    result = await router.generate("extraction", prompt, response_schema=JobPosting)
    result.parsed                        # a JobPosting (or, for a JSON-schema dict, the dict)

For task T the candidates are the active configs flagged for T (lowest priority number, then
lowest id, first), then the active default config (candidates.py: the one place that rule is
written). With no config stored at all, the legacy environment variables (GEMINI_API_KEY with
GEMINI_MODEL_FAST, OPENAI_API_KEY, ANTHROPIC_API_KEY) serve instead. A candidate whose token
limit cannot cover the call is skipped (core.quota reserves the tokens in the database first).
Retryable failures are retried by the SDK itself (honouring Retry-After), then the next
candidate is tried; an authentication failure moves on too; a bad request is raised at once.
Every attempt writes one usage row and updates the Prometheus metrics (attempts.py). With a
`response_schema` each provider is asked for JSON through its own structured output and the
answer is validated on our side (core/providers/structured.py); an invalid answer is asked for
once more from the same candidate, never from the next one (the schema is the caller's).

Configs are cached and re-read when a cheap fingerprint query (at most once every
`config_refresh_s`, 2 s by default) shows a change, so an edit in the console reaches running
routers within seconds and calls do not read configs from the database. Keys stay encrypted in
the config cache; each config's SDK client, which holds its decrypted key, is kept in memory
while that config version is unchanged (building one costs more than the routing itself).

Token limits cost most calls no database round trip: a router leases a block of tokens and hands
it out to its calls (core/quota/leases.py). `lease_calls` sets a lease's size in calls (1 turns
leases off) and `lease_share` the largest share of what remains that one lease may take.

This module is the public contract: these names stay.
"""

from core.models import TASKS, TaskType
from core.pricing import estimate_cost_usd
from core.providers.base import GenerationResult
from core.routing.attempts import Attempt
from core.routing.candidates import LEGACY_PROVIDERS, get_default_provider_config
from core.routing.errors import (
    DatabaseUnavailable,
    LimitsUnavailable,
    NoProviderAvailable,
    ProviderCallError,
    QuotaExceeded,
    RoutingError,
    UnknownTask,
)
from core.routing.plans import CandidatePlan, RoutePlan, explain
from core.routing.router import Router
from core.routing.streams import RoutedStream, SyncStream
from core.usage.seed import log_provider_usage

__all__ = [
    "LEGACY_PROVIDERS",
    "TASKS",
    "Attempt",
    "CandidatePlan",
    "DatabaseUnavailable",
    "GenerationResult",
    "LimitsUnavailable",
    "NoProviderAvailable",
    "ProviderCallError",
    "QuotaExceeded",
    "RoutePlan",
    "RoutedStream",
    "Router",
    "RoutingError",
    "SyncStream",
    "TaskType",
    "UnknownTask",
    "estimate_cost_usd",
    "explain",
    "get_default_provider_config",
    "log_provider_usage",
]
