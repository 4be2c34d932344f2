"""The router: candidates for a task, limits reserved, the provider called, fallback."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Engine

from core.config import Settings
from core.crypto import load_cipher
from core.db import make_engine
from core.models import TaskType, UsageStatus
from core.providers import AIProvider, GenerationResult, ProviderError
from core.providers.base import DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_TIMEOUT_S, Content, Turn
from core.providers.egress import Allowlist
from core.providers.errors import ProviderTimeout
from core.providers.structured import InvalidOutput
from core.quota.leases import HOLD_EXPIRY, LEASE_CALLS, LEASE_SHARE, QuotaLeases
from core.quota.ledger import QuotaLedger, reservation_size
from core.quota.reach import LedgerUnavailable
from core.routing.arguments import (
    check_call,
    check_image,
    check_options,
    check_schema,
    conversation,
)
from core.routing.attempts import Attempt, Caller, Recorder, Trial
from core.routing.budgets import Need, Unpriced, demand, fitted
from core.routing.candidates import (
    Candidate,
    ConfigCache,
    Snapshot,
    candidates_for,
    check_task,
    legacy_from,
    never_read,
)
from core.routing.clients import Clients
from core.routing.errors import (
    LimitsUnavailable,
    NoProviderAvailable,
    ProviderCallError,
    QuotaExceeded,
)
from core.routing.keyring import Keyring, restart_hint
from core.routing.plans import RoutePlan, plan
from core.routing.streams import Opened, RoutedStream, StreamCall, SyncStream, open_stream
from core.routing.sync_loop import SyncLoop, refuse_inside_a_loop
from core.usage.attribution import check_service, tags_text
from core.usage.writer import UsageWriter

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

LIMITS_UNAVAILABLE = "limits_unavailable"  # the usage row's error_type for such an attempt
OUTPUT_RETRIES = 1  # times an answer that does not match the response_schema is asked again


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
        hold_expiry: timedelta = HOLD_EXPIRY,
        lease_calls: int = LEASE_CALLS,
        lease_share: int = LEASE_SHARE,
        lease_clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
        service: str | None = None,
    ) -> None:
        if settings is None:
            base = Settings.from_env()
            settings = replace(
                base,
                database_url=database_url or base.database_url,
                fernet_keys=tuple(fernet_keys) if fernet_keys else base.fernet_keys,
            )
        # The service named on this process's usage rows when a call names none
        # (core/usage/attribution.py); AI_CONSOLE_SERVICE through the settings.
        self._service = check_service(settings.service if service is None else service)
        self._owns_engine = engine is None
        self._engine = engine or make_engine(settings, statement_timeout=True)
        # PostgreSQL may be away, frozen or restarting: no call waits on it for longer than
        # this. (SQLite is a local file: its busy timeout is the bound.)
        timeouts = settings.db_timeouts if self._engine.dialect.name == "postgresql" else None
        self._db_wait_s = timeouts.wait_s if timeouts is not None else None
        self._keys = Keyring(load_cipher(settings))
        self._clients = Clients(
            Allowlist.from_entries(settings.base_url_allowlist), timeout_s, max_retries
        )
        # The longest a call can last: every attempt timing out, plus backoff. A lease is given
        # back this long after its window whatever its calls do.
        self._ttl = reservation_ttl or timedelta(seconds=timeout_s * (max_retries + 1) + 120)
        self._environ = os.environ if environ is None else environ
        self._ledger = QuotaLedger(self._engine, timeouts, clock=lease_clock)
        # lease_calls=1 turns leases off: every limited call then reserves its own tokens.
        # Holds expire `hold_expiry` after the writer's last renewal (leases.py), so those of
        # a process that died are freed within a minute.
        self._leases = QuotaLeases(
            self._ledger,
            self._ttl,
            calls=lease_calls,
            share=lease_share,
            clock=lease_clock,
            expiry=hold_expiry,
        )
        self._writer = UsageWriter(
            self._engine, self._ledger, settings.usage_spool_dir, self._leases
        )
        self._recorder = Recorder(self._writer, self._leases)
        # At exit, before the writer's own atexit hook (they run last-registered first): retire
        # the leases, so the writer's final flush gives back what they hold.
        atexit.register(self._leases.retire_all)
        self._configs = ConfigCache(self._engine, config_refresh_s, self._db_wait_s)
        self._sync = SyncLoop()

    @classmethod
    def from_env(cls, **options: Any) -> Router:
        """A router configured by AI_CONSOLE_DATABASE_URL and AI_CONSOLE_FERNET_KEYS (and
        AI_CONSOLE_SERVICE, the service its calls are for unless they say)."""
        return cls(settings=Settings.from_env(), **options)

    # --- calling ---

    async def generate(
        self,
        task: str | TaskType,
        prompt: str | None = None,
        *,
        messages: Sequence[dict[str, Any]] | None = None,
        system_prompt: str | None = None,
        user_id: int | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        response_schema: type[BaseModel] | dict[str, Any] | None = None,
        fit_to_budget: bool = False,
        service: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> GenerationResult:
        """Answer `prompt`, or the conversation so far (`messages`: [{"role": "user" |
        "assistant", "content": ...}], the last the user's), with the provider that serves
        `task` (see the module docstring). A content is a str, or a list of parts in order:
        {"type": "text", "text": ...} and, in the user's turns, {"type": "image", "data":
        bytes, "mime_type": "image/png"}; every image is checked (its bytes against its type,
        then the provider's types and size) before any call, and counts towards the
        reservation.

        With `response_schema` (a pydantic model class or a JSON-schema dict) the provider is
        asked for JSON of that schema through its own structured output, and `result.parsed`
        is the answer as an instance of the model (or the dict, validated with jsonschema);
        without one `parsed` is None. An answer that does not parse or validate is asked for
        once more from the same provider; if that one fails too, ProviderCallError names the
        field. Both answers are usage rows with their tokens. The next candidate is not tried
        after an invalid answer: the schema is the caller's, not the provider's fault.

        A candidate whose token limit or dollar budget cannot cover the call is skipped. With
        `fit_to_budget=True` it is asked instead with max_output_tokens lowered to what is left
        (if at least 64 tokens fit), and `result.fitted_max_output_tokens` says so
        (core/routing/budgets.py).

        `service` (default: the router's) and `tags` ({"feature": "cv"}: a few values each,
        never ids) are stored on the call's usage rows, for cost by service and tag
        (core/usage/attribution.py)."""
        text, history, need = _checked(
            prompt, messages, system_prompt, user_id, max_output_tokens, fit_to_budget
        )
        caller = self._caller(user_id, service, tags)
        expected = check_schema(response_schema)
        schema = expected.schema if expected is not None else None

        async def send(provider: AIProvider, max_output: int) -> GenerationResult:
            result = await provider.generate_content(
                text, system_prompt, max_output, history, schema
            )
            return result if expected is None else expected.accept(result)

        return await self._route(task, caller, need, send)

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
        fit_to_budget: bool = False,
        service: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> GenerationResult:
        """Like `generate`, with one image (checked for type and size before any call)."""
        check_call(prompt, system_prompt, user_id, max_output_tokens)
        check_image(image_bytes, mime_type)
        caller = self._caller(user_id, service, tags)
        size = reservation_size(prompt, system_prompt, max_output_tokens, images=1)
        return await self._route(
            task,
            caller,
            Need(size - max_output_tokens, max_output_tokens, fit_to_budget),
            lambda p, max_output: p.generate_content_with_image(
                prompt, image_bytes, mime_type, system_prompt, max_output
            ),
        )

    def stream(
        self,
        task: str | TaskType,
        prompt: str | None = None,
        *,
        messages: Sequence[dict[str, Any]] | None = None,
        system_prompt: str | None = None,
        user_id: int | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        fit_to_budget: bool = False,
        service: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> StreamCall:
        """Stream the answer (to `prompt` or `messages`, images included, as for `generate`,
        and `fit_to_budget`, `service` and `tags` too): `async with router.stream(task,
        prompt) as stream: async for text in stream`, then `stream.result`
        (core/routing/streams.py)."""
        text, history, need = _checked(
            prompt, messages, system_prompt, user_id, max_output_tokens, fit_to_budget
        )
        caller = self._caller(user_id, service, tags)

        def begin(trial: Trial, opened: Opened, attempts: list[Attempt]) -> RoutedStream:
            return RoutedStream(trial, opened, attempts, need.prompt_tokens)

        return StreamCall(
            lambda: self._route(
                task,
                caller,
                need,
                lambda p, max_output: open_stream(
                    p.stream_content(text, system_prompt, max_output, history=history)
                ),
                begin,
            )
        )

    def stream_sync(
        self, task: str | TaskType, prompt: str | None = None, **options: Any
    ) -> SyncStream:
        """`stream` for synchronous callers: `with router.stream_sync(task, prompt) as stream:
        for text in stream`, then `stream.result`."""
        refuse_inside_a_loop("stream_sync", "async with router.stream(...)")
        return SyncStream(self.stream(task, prompt, **options), self._sync.run)

    def generate_sync(
        self, task: str | TaskType, prompt: str | None = None, **options: Any
    ) -> GenerationResult:
        """`generate` for synchronous callers (runs on the router's own event loop thread);
        takes the same options, `messages=` and `response_schema=` (then `result.parsed`)
        included."""
        refuse_inside_a_loop("generate_sync", "await generate()")
        return self._sync.run(self.generate(task, prompt, **options))

    # --- explaining ---

    def explain(self, task: str | TaskType) -> RoutePlan:
        """The candidates for `task` in order, each with why it is or is not eligible now.
        Its reads wait no longer than a call's (on the router's event-loop thread), so a
        frozen database makes it say so instead of hanging."""
        snapshot = self._sync.run(self._snapshot(force=True))
        return plan(
            check_task(task),
            snapshot.candidates,
            legacy_from(self._environ),
            self._keys,
            lambda config_id, now: self._sync.run(self._ledger.standing_now(config_id, now)),
        )

    # --- closing ---

    async def aclose(self) -> None:
        """Give back quota leases, write pending usage rows and close connections."""
        self._leases.retire_all()
        atexit.unregister(self._leases.retire_all)
        await asyncio.to_thread(self._writer.close)
        await self._ledger.aclose()
        await self._clients.aclose()
        self._sync.stop(self._close_loop)
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
        caller: Caller,
        need: Need,
        send: Callable[[AIProvider, int], Awaitable[T]],
        finish: Callable[[Trial, T, list[Attempt]], R] | None = None,
    ) -> R:
        """Try the candidates in order until one answers: `send` is the call with the
        max_output_tokens to ask for (for a stream, up to its first piece), `finish` makes the
        answer the caller gets (default: the GenerationResult, recorded as a success)."""
        task_name = check_task(task)
        candidates = candidates_for(task_name, await self._snapshot(), self._environ)
        attempts: list[Attempt] = []
        last_error: ProviderError | None = None
        for candidate in candidates:
            if self._keys.key_for(candidate) is None:  # skipped like an inactive one (keyring.py)
                continue
            for retry in range(OUTPUT_RETRIES + 1):
                trial = Trial(self._recorder, candidate, task_name, caller)
                try:
                    outcome = await self._try(trial, need, send)
                except BaseException as exc:
                    trial.abandoned(exc)
                    raise
                if not isinstance(outcome, Attempt):
                    if finish is None:
                        return trial.succeeded(outcome, attempts)  # type: ignore[arg-type, return-value]
                    return finish(trial, outcome, attempts)
                attempts.append(outcome)
                # An answer that missed the schema is asked for again, from the same candidate
                # (a new attempt with its own hold), before it counts as this one's failure.
                if not isinstance(trial.error, InvalidOutput) or retry == OUTPUT_RETRIES:
                    break
            if trial.error is not None:
                last_error = trial.error
                if not last_error.fallback:
                    raise ProviderCallError(str(last_error), last_error, attempts)
        if not attempts:
            raise NoProviderAvailable(
                f"No provider for {task_name!r} can be called by this process: "
                + "; ".join(restart_hint(c.config_id) for c in candidates)
            )
        _raise_if_limits_unavailable(task_name, attempts)
        if attempts and all(a.status == UsageStatus.REJECTED for a in attempts):
            raise QuotaExceeded(
                f"Every provider for {task_name!r} is at its token limit or dollar budget: "
                + "; ".join(f"{a.provider_type} {a.model_name}" for a in attempts),
                attempts,
            )
        tried = "; ".join(f"{a.provider_type} {a.model_name}: {a.error_message}" for a in attempts)
        raise ProviderCallError(
            f"Every provider for {task_name!r} failed: {tried}", last_error, attempts
        )

    async def _snapshot(self, force: bool = False) -> Snapshot:
        """The configs, re-read when due (or now, `force`). A database that does not answer in
        time leaves the re-read to its thread and the call to the configs read before
        (candidates.py)."""
        if not force and not self._configs.stale():
            return self._configs.snapshot
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._configs.refresh, force), self._db_wait_s
            )
        except TimeoutError:
            if self._configs.snapshot.loaded:
                return self._configs.snapshot
            raise never_read(f"no answer within {self._db_wait_s:g} s") from None

    async def _try(
        self, trial: Trial, need: Need, send: Callable[[AIProvider, int], Awaitable[T]]
    ) -> T | Attempt:
        """One candidate: hold its tokens (and dollars), call it. A result, or the attempt
        that failed."""
        candidate = trial.candidate
        if candidate.limited:
            try:
                held = await self._hold(trial, need)
            except LedgerUnavailable as exc:
                return trial.failed(UsageStatus.ERROR, LIMITS_UNAVAILABLE, str(exc))
            except Unpriced as exc:
                return trial.refused(str(exc))
            if held is None:
                return trial.refused()
            need = held
        provider = self._provider(candidate)
        try:
            return await send(provider, need.max_output_tokens)
        except ProviderError as error:
            trial.error = error
            timed_out = isinstance(error, ProviderTimeout)
            status = UsageStatus.TIMEOUT if timed_out else UsageStatus.ERROR
            used = error.used if isinstance(error, InvalidOutput) else (0, 0)
            return trial.failed(status, error.kind, error.message, trial.elapsed_ms(), used)

    async def _hold(self, trial: Trial, need: Need) -> Need | None:
        """Hold what `need` asks of the candidate's limits; if refused and the caller allows
        it, what a shorter answer asks (budgets.py). The need held, or None."""
        candidate = trial.candidate
        assert candidate.config_id is not None
        trial.reservation = await self._leases.hold(demand(candidate, need, trial.started))
        if trial.reservation is not None or not need.fit:
            return need if trial.reservation is not None else None
        standing = await self._ledger.standing_now(candidate.config_id, trial.started)
        smaller = fitted(candidate, need, standing, trial.started)
        if smaller is None:
            return None
        trial.reservation = await self._leases.hold(demand(candidate, smaller, trial.started))
        if trial.reservation is None:
            return None
        trial.fitted = smaller.max_output_tokens
        return smaller

    def _caller(
        self, user_id: int | None, service: str | None, tags: Mapping[str, str] | None
    ) -> Caller:
        """Who the call's usage rows are for (user_id is checked with the other options)."""
        named = self._service if service is None else check_service(service)
        return Caller(user_id, named, tags_text(tags))

    def _provider(self, candidate: Candidate) -> AIProvider:
        key = self._keys.key_for(candidate)
        assert key is not None  # _route skips a candidate without one
        return self._clients.adapter(candidate, key, self._configs.snapshot.generation)

    async def _close_loop(self) -> None:
        """What belongs to the sync loop's thread: its connections."""
        await self._ledger.aclose()
        await self._clients.aclose()


def _raise_if_limits_unavailable(task: str, attempts: Sequence[Attempt]) -> None:
    """LimitsUnavailable when no candidate could be called only because the database that keeps
    the limits did not answer (the others, if any, refused by their limits)."""
    down = [a for a in attempts if a.error_type == LIMITS_UNAVAILABLE]
    if down and all(a in down or a.status == UsageStatus.REJECTED for a in attempts):
        names = "; ".join(f"config {a.config_id} ({a.provider_type} {a.model_name})" for a in down)
        raise LimitsUnavailable(
            f"No provider for {task!r} could be called: the database that keeps the token limits "
            f"of {names} did not answer, and no lease of this router covers the call; "
            "it works again once the database answers",
            [a.config_id for a in down if a.config_id is not None],
            attempts,
        )


def _checked(
    prompt: str | None,
    messages: Sequence[dict[str, Any]] | None,
    system_prompt: str | None,
    user_id: int | None,
    max_output_tokens: int,
    fit_to_budget: bool,
) -> tuple[Content, tuple[Turn, ...], Need]:
    """The prompt, the turns before it and what to hold, once the arguments pass
    (arguments.py: TypeError / ValueError before anything is held or sent)."""
    text, history = conversation(prompt, messages)
    check_options(system_prompt, user_id, max_output_tokens)
    if not isinstance(fit_to_budget, bool):
        raise TypeError(f"fit_to_budget must be True or False, not {type(fit_to_budget).__name__}")
    size = reservation_size(text, system_prompt, max_output_tokens, history=history)
    return text, history, Need(size - max_output_tokens, max_output_tokens, fit_to_budget)
