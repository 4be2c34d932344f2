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
routers within seconds and calls do not read configs from the database. Keys stay encrypted in
the config cache; each config's SDK client, which holds its decrypted key, is kept in memory while
that config version is unchanged (building one costs more than the routing itself).

Token limits cost most calls no database round trip: a router leases a block of tokens and hands
it out to its calls (core/quota_leases.py). `lease_calls` sets a lease's size in calls (1 turns
leases off) and `lease_share` the largest share of what remains that one lease may take.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx2
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core import metrics
from core.config import Settings
from core.crypto import DecryptionError, SecretBox, load_cipher
from core.db import make_engine
from core.models import ProviderConfig, TaskType, UsageSource, UsageStatus, utcnow
from core.pricing import estimate_cost_usd, to_micro_usd
from core.providers import AIProvider, GenerationResult, ProviderError, ProviderFactory, redact
from core.providers.base import DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_TIMEOUT_S, ProviderTimeout
from core.quota import QuotaLedger, Reservation, Standing, reservation_size
from core.quota_leases import LEASE_CALLS, LEASE_SHARE, QuotaLeases
from core.usage import UsageRecord, UsageWriter, log_provider_usage

__all__ = [
    "Attempt",
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

T = TypeVar("T")
TASKS = tuple(task.value for task in TaskType)
LEGACY_PROVIDERS = (  # (type, key variable, model variable, default model)
    ("gemini", "GEMINI_API_KEY", "GEMINI_MODEL_FAST", "gemini-2.5-flash"),
    ("openai", "OPENAI_API_KEY", "OPENAI_MODEL", "gpt-4o-mini"),
    ("claude", "ANTHROPIC_API_KEY", "ANTHROPIC_MODEL", "claude-haiku-4-5"),
)


# --- errors ----------------------------------------------------------------------------------


class RoutingError(Exception):
    """Base of everything core.routing raises."""


class UnknownTask(RoutingError, ValueError):
    """The task is not one of extraction, cv_draft, cover_letter, validation."""


class NoProviderAvailable(RoutingError):
    """No config (and no legacy environment variable) serves the task."""


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


@dataclass(frozen=True)
class Candidate:
    """A config as the router caches it: the key stays encrypted (or, legacy, in the env)."""

    config_id: int | None
    provider_type: str
    model_name: str
    display_name: str
    base_url: str | None
    secret: str  # ciphertext for a stored config; the env value for a legacy one
    is_active: bool = True
    is_default: bool = False
    tasks: frozenset[str] = frozenset()
    priority: int = 0
    daily_token_limit: int | None = None
    monthly_token_limit: int | None = None
    last_test_success: bool | None = None
    last_test_message: str | None = None

    @property
    def legacy(self) -> bool:
        return self.config_id is None

    @property
    def limited(self) -> bool:
        return self.daily_token_limit is not None or self.monthly_token_limit is not None

    def __repr__(self) -> str:  # never the secret
        return f"Candidate({self.config_id}, {self.provider_type}, {self.model_name!r})"


@dataclass(frozen=True)
class CandidatePlan:
    config_id: int | None
    display_name: str
    provider_type: str
    model_name: str
    eligible: bool
    reason: str


@dataclass(frozen=True)
class RoutePlan:
    """Who would serve a task now, in order, and why each candidate is or is not eligible."""

    task: str
    candidates: tuple[CandidatePlan, ...]
    legacy: bool = False

    @property
    def serving(self) -> CandidatePlan | None:
        return next((c for c in self.candidates if c.eligible), None)

    def __str__(self) -> str:
        lines = [f"{self.task}:" + (" (legacy environment variables)" if self.legacy else "")]
        for n, c in enumerate(self.candidates, 1):
            mark = "ok " if c.eligible else "-- "
            lines.append(
                f"  {n}. {mark}{c.display_name} ({c.provider_type} {c.model_name}): {c.reason}"
            )
        return "\n".join(lines) if self.candidates else f"{self.task}: no candidate"


@dataclass
class _Snapshot:
    candidates: tuple[Candidate, ...] = ()
    fingerprint: tuple[Any, ...] | None = None
    checked_at: float = field(default=-1e9)
    generation: int = 0


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
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._refresh_s = config_refresh_s
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
        self._snapshot = _Snapshot()
        self._refresh_lock = threading.Lock()
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
        snapshot = self._refresh(force=True)
        return _plan(
            _task_name(task),
            snapshot.candidates,
            self._legacy_candidates(),
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
        task_name = _task_name(task)
        snapshot = self._snapshot
        if time.monotonic() - snapshot.checked_at > self._refresh_s:
            snapshot = await asyncio.to_thread(self._refresh)
        candidates = self._candidates(task_name, snapshot)
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
                if reservation is not None:  # release the hold; the call's outcome is unknown
                    self._submit(
                        self._usage(
                            candidate,
                            task_name,
                            user_id,
                            started,
                            UsageStatus.ERROR,
                            "internal",
                            None,
                            0,
                        ),
                        reservation,
                    )
                raise
            cost = estimate_cost_usd(
                candidate.provider_type,
                result.model_name,
                result.input_tokens,
                result.output_tokens,
                started,
            ) or estimate_cost_usd(
                candidate.provider_type,
                candidate.model_name,
                result.input_tokens,
                result.output_tokens,
                started,
            )
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
        if state.generation != self._snapshot.generation:
            state.adapters.clear()
            state.generation = self._snapshot.generation
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

    def _candidates(self, task: str, snapshot: _Snapshot) -> list[Candidate]:
        if not snapshot.candidates:
            legacy = self._legacy_candidates()
            if not legacy:
                raise NoProviderAvailable(
                    f"No provider serves {task!r}: add one in the console's Providers page "
                    "(or `python -m core providers add`), or set GEMINI_API_KEY"
                )
            return legacy
        active = [c for c in snapshot.candidates if c.is_active]
        chosen = sorted(
            (c for c in active if task in c.tasks), key=lambda c: (c.priority, c.config_id)
        )
        chosen += [c for c in active if c.is_default and c not in chosen]
        if not chosen:
            raise NoProviderAvailable(
                f"No active provider serves {task!r}: tick {task} on a provider in the "
                "console's Providers page, make one the default, or activate one"
            )
        return chosen

    def _legacy_candidates(self) -> list[Candidate]:
        return _legacy_from(self._environ)

    def _refresh(self, force: bool = False) -> _Snapshot:
        """Re-read configs if the fingerprint changed (at most once per refresh interval)."""
        with self._refresh_lock:
            current = self._snapshot
            if not force and time.monotonic() - current.checked_at <= self._refresh_s:
                return current
            with Session(self._engine) as session:
                fingerprint = tuple(session.execute(_FINGERPRINT).one())
                if fingerprint != current.fingerprint:
                    rows = session.scalars(select(ProviderConfig)).all()
                    current = _Snapshot(
                        tuple(_candidate(row) for row in rows),
                        fingerprint,
                        generation=current.generation + 1,
                    )
            self._snapshot = replace(current, checked_at=time.monotonic())
            return self._snapshot

    def _loop_state(self) -> _LoopState:
        """This event loop's connection pool (shared by every provider) and adapters."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            http = httpx2.AsyncClient(
                follow_redirects=True,
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


_FINGERPRINT = select(
    func.count(ProviderConfig.id),
    func.coalesce(func.max(ProviderConfig.id), 0),
    func.coalesce(func.sum(ProviderConfig.version), 0),
    func.max(ProviderConfig.last_tested_at),
    func.max(ProviderConfig.updated_at),
)


def _legacy_from(environ: Mapping[str, str]) -> list[Candidate]:
    """Candidates from GEMINI_API_KEY, OPENAI_API_KEY and ANTHROPIC_API_KEY, in that order."""
    found = []
    for provider_type, key_var, model_var, model in LEGACY_PROVIDERS:
        key = environ.get(key_var, "").strip()
        if key:
            model_name = (environ.get(model_var) or model).removeprefix("models/")
            found.append(
                Candidate(None, provider_type, model_name, f"{key_var} (legacy)", None, key)
            )
    return found


def _candidate(row: ProviderConfig) -> Candidate:
    return Candidate(
        config_id=row.id,
        provider_type=row.provider_type,
        model_name=row.model_name,
        display_name=row.display_name,
        base_url=row.base_url,
        secret=row.api_key_encrypted,
        is_active=row.is_active,
        is_default=row.is_default,
        tasks=frozenset(task for task in TASKS if row.serves(task)),
        priority=row.priority,
        daily_token_limit=row.daily_token_limit,
        monthly_token_limit=row.monthly_token_limit,
        last_test_success=row.last_test_success,
        last_test_message=row.last_test_message,
    )


def explain(
    task: str | TaskType,
    engine: Engine,
    cipher: SecretBox,
    environ: Mapping[str, str] | None = None,
) -> RoutePlan:
    """What a router would do for `task` now (for the console, which runs no router)."""
    with Session(engine) as session:
        candidates = tuple(_candidate(row) for row in session.scalars(select(ProviderConfig)))
    return _plan(
        _task_name(task),
        candidates,
        _legacy_from(os.environ if environ is None else environ),
        cipher,
        QuotaLedger(engine),
    )


def _plan(
    task: str,
    candidates: Sequence[Candidate],
    legacy: Sequence[Candidate],
    cipher: SecretBox,
    ledger: QuotaLedger,
) -> RoutePlan:
    if not candidates:
        reason = "no config is stored: served from the environment"
        plans = [
            CandidatePlan(None, c.display_name, c.provider_type, c.model_name, True, reason)
            for c in legacy
        ]
        return RoutePlan(task, tuple(plans), legacy=True)
    now = utcnow()
    considered = sorted(
        (c for c in candidates if task in c.tasks or c.is_default),
        key=lambda c: (task not in c.tasks, c.priority, c.config_id or 0),
    )
    return RoutePlan(
        task,
        tuple(
            CandidatePlan(
                c.config_id,
                c.display_name,
                c.provider_type,
                c.model_name,
                *_eligibility(c, cipher, ledger, now),
            )
            for c in considered
        ),
    )


def _eligibility(
    candidate: Candidate, cipher: SecretBox, ledger: QuotaLedger, now: datetime
) -> tuple[bool, str]:
    if not candidate.is_active:
        return False, "inactive"
    try:
        cipher.decrypt(candidate.secret)
    except DecryptionError:
        return False, "its key cannot be decrypted with AI_CONSOLE_FERNET_KEYS"
    if candidate.limited:
        assert candidate.config_id is not None
        if full := _limit_reached(candidate, ledger.standing(candidate.config_id, now)):
            return False, full
    why = "default for every task" if candidate.is_default else "serves this task"
    if candidate.last_test_success is False:
        return True, f"{why}; warning: its last credential test failed"
    return True, why


def _task_name(task: str | TaskType) -> str:
    try:
        return TaskType(task).value
    except ValueError:
        raise UnknownTask(f"unknown task {task!r}: use one of {', '.join(TASKS)}") from None


def _limit_reached(candidate: Candidate, standing: Standing) -> str | None:
    checks = (
        ("daily", candidate.daily_token_limit, standing.day_used, standing.day_reserved),
        ("monthly", candidate.monthly_token_limit, standing.month_used, standing.month_reserved),
    )
    for period, limit, used, reserved in checks:
        if limit is not None and used + reserved >= limit:
            return (
                f"{period} limit reached: {used:,} used + {reserved:,} reserved by running "
                f"calls of {limit:,} tokens"
            )
    return None


def get_default_provider_config(session: Session, task: str | TaskType) -> ProviderConfig | None:
    """The config that would serve `task` first (the seed's helper), ignoring limits."""
    task_name = _task_name(task)
    flag = getattr(ProviderConfig, f"default_for_{task_name}")
    row = session.scalars(
        select(ProviderConfig)
        .where(ProviderConfig.is_active, flag)
        .order_by(ProviderConfig.priority, ProviderConfig.id)
        .limit(1)
    ).first()
    if row is not None:
        return row
    return session.scalars(
        select(ProviderConfig).where(ProviderConfig.is_active, ProviderConfig.is_default)
    ).first()
