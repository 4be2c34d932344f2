"""core.routing: the library backend services import to call an AI provider for a task.

    from core.routing import Router
    router = Router.from_env()
    result = await router.generate("extraction", "Extract the job title from ...", user_id=42)

For task T the candidates are the active configs flagged for T (lowest priority number, then
lowest id, first), then the active default config. With no config stored at all, the legacy
environment variables (GEMINI_API_KEY with GEMINI_MODEL_FAST, OPENAI_API_KEY, ANTHROPIC_API_KEY)
serve instead. A candidate whose token limit cannot cover the call is skipped (core.quota
reserves the tokens in the database first). Retryable failures are retried by the SDK itself
(honouring Retry-After), then the next candidate is tried; an authentication failure moves on
too; a bad request is raised at once. Every attempt writes one usage row (core.usage) and
updates the Prometheus metrics (core.metrics).

Configs are cached and re-read when a cheap fingerprint query (at most once every
`config_refresh_s`, 2 s by default) shows a change, so an edit in the console reaches running
routers within seconds and calls do not read configs from the database; core/candidates.py keeps
that cache, orders candidates and explains them. Keys stay encrypted in the config cache; each
config's SDK client, which holds its decrypted key, is kept in memory while that config version
is unchanged (building one costs more than the routing itself).

Token limits cost most calls no database round trip: a router leases a block of tokens and hands
it out to its calls (core/quota_leases.py). `lease_calls` sets a lease's size in calls (1 turns
leases off) and `lease_share` the largest share of what remains that one lease may take.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx2
from sqlalchemy import Engine

from core import metrics
from core.candidates import (
    LEGACY_PROVIDERS,
    TASKS,
    Candidate,
    CandidatePlan,
    ConfigCache,
    NoProviderAvailable,
    RoutePlan,
    RoutingError,
    UnknownTask,
    candidates_for,
    check_task,
    explain,
    get_default_provider_config,
    legacy_from,
    plan,
)
from core.config import Settings
from core.crypto import DecryptionError, SecretBox, load_cipher
from core.db import make_engine
from core.models import TaskType, UsageSource, UsageStatus, utcnow
from core.pricing import estimate_cost_usd, to_micro_usd
from core.providers import AIProvider, GenerationResult, ProviderError, ProviderFactory, redact
from core.providers.base import DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_TIMEOUT_S, ProviderTimeout
from core.providers.egress import Allowlist, egress_client
from core.quota import QuotaLedger, Reservation, reservation_size
from core.quota_leases import LEASE_CALLS, LEASE_SHARE, QuotaLeases
from core.usage import UsageRecord, UsageWriter, log_provider_usage

log = logging.getLogger(__name__)

__all__ = [
    "LEGACY_PROVIDERS",
    "TASKS",
    "Attempt",
    "CandidatePlan",
    "GenerationResult",
    "NoProviderAvailable",
    "ProviderCallError",
    "QuotaExceeded",
    "RoutePlan",
    "Router",
    "RoutingError",
    "TaskType",
    "UnknownTask",
    "estimate_cost_usd",
    "explain",
    "get_default_provider_config",
    "log_provider_usage",
]


# --- errors ----------------------------------------------------------------------------------


class QuotaExceeded(RoutingError):
    """Every candidate's daily or monthly token limit would be exceeded by this call."""

    def __init__(self, message: str, attempts: Sequence[Attempt]) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)


class ProviderCallError(RoutingError):
    """The call failed: a bad request (raised at once), or every candidate failed.

    `error` is the last provider's error (provider-neutral, redacted); `attempts` lists all.
    """

    def __init__(self, message: str, error: ProviderError | None, attempts: Sequence[Attempt]):
        super().__init__(message)
        self.error = error
        self.attempts = tuple(attempts)


# --- what a call goes through ----------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One try at one candidate (kept on results and errors; also stored as a usage row)."""

    config_id: int | None
    provider_type: str
    model_name: str
    status: str
    error_type: str | None = None
    error_message: str | None = None
    latency_ms: int = 0


@dataclass
class _LoopState:
    http: httpx2.AsyncClient
    adapters: dict[tuple[Any, ...], AIProvider] = field(default_factory=dict)
    generation: int = -1


# --- the router ------------------------------------------------------------------------------


class Router:
    """Routes calls for backend services. One per process; safe to share between tasks."""

    def __init__(
        self,
        database_url: str | None = None,
        fernet_keys: Sequence[str] | None = None,
        *,
        settings: Settings | None = None,
        engine: Engine | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        config_refresh_s: float = 2.0,
        reservation_ttl: timedelta | None = None,
        lease_calls: int = LEASE_CALLS,
        lease_share: int = LEASE_SHARE,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if settings is None:
            base = Settings.from_env()
            settings = replace(
                base,
                database_url=database_url or base.database_url,
                fernet_keys=tuple(fernet_keys) if fernet_keys else base.fernet_keys,
            )
        self._owns_engine = engine is None
        self._engine = engine or make_engine(settings)
        self._cipher: SecretBox = load_cipher(settings)
        self._allowlist = Allowlist.from_entries(settings.base_url_allowlist)
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        # A hold must outlive the longest call: every attempt timing out, plus backoff.
        self._ttl = reservation_ttl or timedelta(seconds=timeout_s * (max_retries + 1) + 120)
        self._environ = os.environ if environ is None else environ
        self._ledger = QuotaLedger(self._engine)
        # lease_calls=1 turns leases off: every limited call then reserves its own tokens.
        self._leases = QuotaLeases(self._ledger, self._ttl, calls=lease_calls, share=lease_share)
        self._writer = UsageWriter(self._engine, self._ledger, self._leases)
        # At exit, before the writer's own atexit hook (they run last-registered first): retire
        # the leases, so the writer's final flush gives back what they hold.
        atexit.register(self._leases.retire_all)
        self._configs = ConfigCache(self._engine, config_refresh_s)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._sync_loop: asyncio.AbstractEventLoop | None = None
        self._sync_lock = threading.Lock()

    @classmethod
    def from_env(cls, **options: Any) -> Router:
        """A router configured by AI_CONSOLE_DATABASE_URL and AI_CONSOLE_FERNET_KEYS."""
        return cls(settings=Settings.from_env(), **options)

    # --- calling ---

    async def generate(
        self,
        task: str | TaskType,
        prompt: str,
        *,
        system_prompt: str | None = None,
        user_id: int | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> GenerationResult:
        """Answer `prompt` with the provider that serves `task` (see the module docstring)."""
        size = reservation_size(prompt, system_prompt, max_output_tokens)
        return await self._route(
            task,
            user_id,
            size,
            lambda p: p.generate_content(prompt, system_prompt, max_output_tokens),
        )

    async def generate_with_image(
        self,
        task: str | TaskType,
        prompt: str,
        image_bytes: bytes,
        mime_type: str = "image/png",
        *,
        system_prompt: str | None = None,
        user_id: int | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> GenerationResult:
        """Like `generate`, with one image (checked for type and size before any call)."""
        size = reservation_size(prompt, system_prompt, max_output_tokens, images=1)
        return await self._route(
            task,
            user_id,
            size,
            lambda p: p.generate_content_with_image(
                prompt, image_bytes, mime_type, system_prompt, max_output_tokens
            ),
        )

    def generate_sync(self, task: str | TaskType, prompt: str, **options: Any) -> GenerationResult:
        """`generate` for synchronous callers (runs on the router's own event loop thread)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("generate_sync() inside an event loop: use `await generate()`")
        future = asyncio.run_coroutine_threadsafe(
            self.generate(task, prompt, **options), self._background_loop()
        )
        return future.result()

    # --- explaining ---

    def explain(self, task: str | TaskType) -> RoutePlan:
        """The candidates for `task` in order, each with why it is or is not eligible now."""
        snapshot = self._configs.refresh(force=True)
        return plan(
            check_task(task),
            snapshot.candidates,
            legacy_from(self._environ),
            self._cipher,
            self._ledger,
        )

    # --- closing ---

    async def aclose(self) -> None:
        """Give back quota leases, write pending usage rows and close connections."""
        self._leases.retire_all()
        atexit.unregister(self._leases.retire_all)
        await asyncio.to_thread(self._writer.close)
        await self._ledger.aclose()
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.http.aclose()
        self._stop_background_loop()
        if self._owns_engine:
            self._engine.dispose()

    def close(self) -> None:
        """`aclose` for synchronous callers (those using generate_sync)."""
        asyncio.run(self.aclose())

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every attempt so far is stored (tests, graceful shutdown)."""
        return self._writer.flush(timeout)

    # --- internals ---

    async def _route(
        self,
        task: str | TaskType,
        user_id: int | None,
        size: int,
        send: Callable[[AIProvider], Awaitable[GenerationResult]],
    ) -> GenerationResult:
        task_name = check_task(task)
        snapshot = self._configs.snapshot
        if self._configs.stale():
            snapshot = await asyncio.to_thread(self._configs.refresh)
        candidates = candidates_for(task_name, snapshot, self._environ)
        attempts: list[Attempt] = []
        last_error: ProviderError | None = None
        for candidate in candidates:
            started = utcnow()
            record = functools.partial(self._record, candidate, task_name, user_id, started)
            reservation: Reservation | None = None
            if candidate.limited:
                assert candidate.config_id is not None
                reservation = await self._leases.hold(
                    candidate.config_id,
                    size,
                    candidate.daily_token_limit,
                    candidate.monthly_token_limit,
                    started,
                )
                if reservation is None:
                    attempts.append(
                        record(
                            None,
                            UsageStatus.REJECTED,
                            "quota",
                            "daily or monthly token limit reached",
                        )
                    )
                    continue
            try:
                provider = self._provider(candidate)
            except DecryptionError as exc:
                attempts.append(
                    record(reservation, UsageStatus.ERROR, "key_undecryptable", str(exc))
                )
                continue
            except BaseException:
                self._abandon(candidate, task_name, user_id, started, reservation)
                raise
            try:
                result = await send(provider)
            except ProviderError as error:
                last_error = error
                status = UsageStatus.TIMEOUT if isinstance(error, ProviderTimeout) else "error"
                latency = round((utcnow() - started).total_seconds() * 1000)
                attempts.append(record(reservation, status, error.kind, error.message, latency))
                if not error.fallback:
                    raise ProviderCallError(str(error), error, attempts) from None
                continue
            except BaseException:
                self._abandon(candidate, task_name, user_id, started, reservation)
                raise
            cost = _cost(candidate, result, started)
            record = self._usage(
                candidate,
                task_name,
                user_id,
                started,
                UsageStatus.SUCCESS,
                None,
                None,
                result.latency_ms,
                result,
                cost,
            )
            self._submit(record, reservation)
            metrics.observe(
                candidate.provider_type,
                task_name,
                "success",
                result.total_tokens,
                cost,
                result.latency_ms,
            )
            return replace(
                result, config_id=candidate.config_id, cost_usd=cost, attempts=tuple(attempts)
            )
        if attempts and all(a.status == UsageStatus.REJECTED for a in attempts):
            raise QuotaExceeded(
                f"Every provider for {task_name!r} is at its token limit: "
                + "; ".join(f"{a.provider_type} {a.model_name}" for a in attempts),
                attempts,
            )
        tried = "; ".join(f"{a.provider_type} {a.model_name}: {a.error_message}" for a in attempts)
        raise ProviderCallError(
            f"Every provider for {task_name!r} failed: {tried}", last_error, attempts
        )

    def _provider(self, candidate: Candidate) -> AIProvider:
        """The adapter for a candidate, built once per config version and event loop.

        Building an SDK client costs more than the routing itself (~0.3 ms of lazy set-up on
        its first request), so each one is kept while its config is unchanged, like any service
        keeps its own credentials; a config edit or key rotation builds a fresh one.
        """
        state = self._loop_state()
        generation = self._configs.snapshot.generation
        if state.generation != generation:
            state.adapters.clear()
            state.generation = generation
        cache_key = (
            candidate.config_id,
            candidate.provider_type,
            candidate.model_name,
            candidate.base_url,
            candidate.secret,
        )
        adapter = state.adapters.get(cache_key)
        if adapter is None:
            key = candidate.secret if candidate.legacy else self._cipher.decrypt(candidate.secret)
            adapter = ProviderFactory.create_provider(
                candidate.provider_type,
                key,
                candidate.model_name,
                candidate.base_url,
                timeout_s=self._timeout_s,
                max_retries=self._max_retries,
                http_client=state.http,
            )
            state.adapters[cache_key] = adapter
        return adapter

    def _abandon(
        self,
        candidate: Candidate,
        task: str,
        user_id: int | None,
        started: Any,
        reservation: Reservation | None,
    ) -> None:
        """The attempt ended in an exception of ours or the caller's (a cancellation, say): its
        outcome is unknown, so log it as an internal error and release its hold."""
        if reservation is not None:
            usage = self._usage(
                candidate, task, user_id, started, UsageStatus.ERROR, "internal", None, 0
            )
            self._submit(usage, reservation)

    def _submit(self, record: UsageRecord, reservation: Reservation | None) -> None:
        """Hand a finished attempt to the usage writer; a lease gets back what it did not use."""
        if reservation is not None:
            self._leases.spent(reservation, record.total_tokens)
        self._writer.submit(record, reservation)

    def _usage(
        self,
        candidate: Candidate,
        task: str,
        user_id: int | None,
        started: Any,
        status: str,
        error_type: str | None,
        message: str | None,
        latency_ms: int,
        result: GenerationResult | None = None,
        cost: Decimal | None = None,
    ) -> UsageRecord:
        return UsageRecord(
            provider_config_id=candidate.config_id,
            user_id=user_id,
            provider_type=candidate.provider_type,
            model_name=result.model_name if result else candidate.model_name,
            task_type=task,
            status=str(status),
            input_tokens=result.input_tokens if result else 0,
            output_tokens=result.output_tokens if result else 0,
            total_tokens=result.total_tokens if result else 0,
            cost_micro_usd=to_micro_usd(cost),
            error_type=error_type,
            error_message=redact(message, [candidate.secret]) if message else None,
            latency_ms=latency_ms,
            source=UsageSource.LEGACY_ENV if candidate.legacy else UsageSource.ROUTER,
            created_at=started,
        )

    def _record(
        self,
        candidate: Candidate,
        task: str,
        user_id: int | None,
        started: Any,
        reservation: Reservation | None,
        status: str,
        error_type: str,
        message: str,
        latency_ms: int = 0,
    ) -> Attempt:
        """Store a failed or refused attempt; returns it for the result's history."""
        record = self._usage(
            candidate, task, user_id, started, status, error_type, message, latency_ms
        )
        self._submit(record, reservation)
        metrics.observe(candidate.provider_type, task, str(status), 0, None, latency_ms)
        return Attempt(
            candidate.config_id,
            candidate.provider_type,
            candidate.model_name,
            str(status),
            error_type,
            record.error_message,
            latency_ms,
        )

    def _loop_state(self) -> _LoopState:
        """This event loop's connection pool (shared by every provider) and adapters."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            # No redirects, no proxies, every connection's address vetted (core.providers.egress).
            http = egress_client(
                self._allowlist,
                limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
            )
            state = self._loops[loop] = _LoopState(http)
        return state

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._sync_lock:
            if self._sync_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="router-sync", daemon=True).start()
                self._sync_loop = loop
            return self._sync_loop

    def _stop_background_loop(self) -> None:
        with self._sync_lock:
            loop, self._sync_loop = self._sync_loop, None
        if loop is None:
            return

        async def close_client() -> None:
            await self._ledger.aclose()
            state = self._loops.pop(loop, None)
            if state is not None:
                await state.http.aclose()

        asyncio.run_coroutine_threadsafe(close_client(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)


def _cost(candidate: Candidate, result: GenerationResult, at: datetime) -> Decimal | None:
    """genai-prices' figure for the model that answered (or the configured one, when the price
    data knows only that name); None when unpriced. Never raises: the call has been made and
    its usage must still be recorded against the limit."""
    try:
        for model in dict.fromkeys((result.model_name, candidate.model_name)):
            cost = estimate_cost_usd(
                candidate.provider_type, model, result.input_tokens, result.output_tokens, at
            )
            if cost is not None:
                return cost
    except Exception as exc:
        log.warning("pricing %s %s failed (%s)", candidate.provider_type, result.model_name, exc)
    return None
