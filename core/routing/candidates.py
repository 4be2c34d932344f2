"""Which stored configs may serve a task, in what order: the ONE routing rule.

`ConfigCache` keeps every config as a `Candidate` (key still encrypted) and re-reads them only
when a cheap fingerprint query shows a change, at most once per refresh interval, so calls do
not read configs from the database and a console edit still reaches running routers within
seconds. `candidates_for` orders them for a task (DESIGN.md, task routing semantics).

When the database does not answer a re-read, the configs already read keep serving (one
warning per outage) and the next re-read is tried after the refresh interval; only a router that
has never read them fails, with `DatabaseUnavailable`. One thread re-reads at a time: a call
that finds a re-read under way uses the configs it has instead of queueing behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core.db import UNAVAILABLE, failure_reason
from core.models import TASKS, ProviderConfig, TaskType
from core.quota.ledger import Limits
from core.routing.errors import DatabaseUnavailable, NoProviderAvailable, UnknownTask

log = logging.getLogger(__name__)

NO_LIMITS = Limits()

LEGACY_PROVIDERS = (  # (type, key variable, model variable, default model)
    ("gemini", "GEMINI_API_KEY", "GEMINI_MODEL_FAST", "gemini-2.5-flash"),
    ("openai", "OPENAI_API_KEY", "OPENAI_MODEL", "gpt-4o-mini"),
    ("claude", "ANTHROPIC_API_KEY", "ANTHROPIC_MODEL", "claude-haiku-4-5"),
)


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
    daily_budget_micro_usd: int | None = None
    monthly_budget_micro_usd: int | None = None
    last_test_success: bool | None = None
    last_test_message: str | None = None

    @property
    def legacy(self) -> bool:
        return self.config_id is None

    @property
    def limits(self) -> Limits:
        return Limits(
            self.daily_token_limit,
            self.monthly_token_limit,
            self.daily_budget_micro_usd,
            self.monthly_budget_micro_usd,
        )

    @property
    def limited(self) -> bool:
        """Whether it has a token limit or a dollar budget (its calls reserve first)."""
        return self.limits != NO_LIMITS

    def __repr__(self) -> str:  # never the secret
        return f"Candidate({self.config_id}, {self.provider_type}, {self.model_name!r})"


@dataclass
class Snapshot:
    """Every stored config at one moment (the router's cache of them)."""

    candidates: tuple[Candidate, ...] = ()
    fingerprint: tuple[Any, ...] | None = None
    checked_at: float = field(default=-1e9)
    generation: int = 0
    unavailable: str | None = None  # why the last re-read failed (the configs are older)

    @property
    def loaded(self) -> bool:
        return self.fingerprint is not None


class ConfigCache:
    """Every stored config, re-read when the fingerprint changes (at most every `refresh_s`)."""

    def __init__(self, engine: Engine, refresh_s: float, wait_s: float | None = None) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._wait_s = -1 if wait_s is None else wait_s  # -1: as long as the driver waits
        self._lock = threading.Lock()
        self.snapshot = Snapshot()

    def stale(self) -> bool:
        """Whether the fingerprint is due to be checked again (and no thread is at it)."""
        due = time.monotonic() - self.snapshot.checked_at > self._refresh_s
        return due and not (self.snapshot.loaded and self._lock.locked())

    def refresh(self, force: bool = False) -> Snapshot:
        """The configs now: re-read if the fingerprint changed (unless checked just now). If
        the database does not answer: the configs read before, else DatabaseUnavailable."""
        current = self.snapshot
        if current.loaded and not force:
            acquired = self._lock.acquire(blocking=False)
        else:
            acquired = self._lock.acquire(timeout=self._wait_s)
        if not acquired:  # another thread is re-reading: it may wait, this call does not
            if current.loaded:
                return current
            raise never_read("a re-read is waiting for it")
        try:
            current = self.snapshot
            if not force and time.monotonic() - current.checked_at <= self._refresh_s:
                return current
            try:
                current = self._read(current)
            except UNAVAILABLE as exc:
                current = self._unavailable(current, failure_reason(exc))
            self.snapshot = replace(current, checked_at=time.monotonic())
            return self.snapshot
        finally:
            self._lock.release()

    def _read(self, current: Snapshot) -> Snapshot:
        was_unavailable = current.unavailable is not None
        with Session(self._engine) as session:
            fingerprint = tuple(session.execute(_FINGERPRINT).one())
            if fingerprint != current.fingerprint:
                rows = session.scalars(select(ProviderConfig)).all()
                current = Snapshot(
                    tuple(candidate_from(row) for row in rows),
                    fingerprint,
                    generation=current.generation + 1,
                )
        if was_unavailable:
            log.warning("configs: the database answers again; configs re-read")
        return replace(current, unavailable=None)

    @staticmethod
    def _unavailable(current: Snapshot, reason: str) -> Snapshot:
        if not current.loaded:
            raise never_read(reason)
        if current.unavailable is None:
            log.warning(
                "configs: the database did not answer (%s); serving the configs read before", reason
            )
        return replace(current, unavailable=reason)


def never_read(reason: str) -> DatabaseUnavailable:
    """What a router that has not read the configs yet raises while the database is away."""
    return DatabaseUnavailable(
        "the database did not answer, and this router has not read the provider configs yet "
        f"({reason}); calls work again once it answers"
    )


def serving_order(
    task: str, candidates: Iterable[Candidate], *, inactive: bool = False
) -> list[Candidate]:
    """THE routing rule (DESIGN.md, task routing semantics), the one place it is written: the
    configs flagged for `task`, lowest priority number first (then lowest id), then the default
    config if it is not already listed. Active ones only, unless `inactive` (explain lists the
    inactive ones too, as not eligible)."""
    pool = [c for c in candidates if inactive or c.is_active]
    chosen = sorted((c for c in pool if task in c.tasks), key=lambda c: (c.priority, c.config_id))
    chosen += [c for c in pool if c.is_default and c not in chosen]
    return chosen


def candidates_for(task: str, snapshot: Snapshot, environ: Mapping[str, str]) -> list[Candidate]:
    """The candidates for `task` in the order they are tried (legacy ones with no config)."""
    if not snapshot.candidates:
        legacy = legacy_from(environ)
        if not legacy:
            raise NoProviderAvailable(
                f"No provider serves {task!r}: add one in the console's Providers page "
                "(or `python -m core providers add`), or set GEMINI_API_KEY"
            )
        return legacy
    chosen = serving_order(task, snapshot.candidates)
    if not chosen:
        raise NoProviderAvailable(
            f"No active provider serves {task!r}: tick {task} on a provider in the "
            "console's Providers page, make one the default, or activate one"
        )
    return chosen


_FINGERPRINT = select(
    func.count(ProviderConfig.id),
    func.coalesce(func.max(ProviderConfig.id), 0),
    func.coalesce(func.sum(ProviderConfig.version), 0),
    func.max(ProviderConfig.last_tested_at),
    func.max(ProviderConfig.updated_at),
)


def legacy_from(environ: Mapping[str, str]) -> list[Candidate]:
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


def candidate_from(row: ProviderConfig) -> Candidate:
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
        daily_budget_micro_usd=row.daily_budget_micro_usd,
        monthly_budget_micro_usd=row.monthly_budget_micro_usd,
        last_test_success=row.last_test_success,
        last_test_message=row.last_test_message,
    )


def check_task(task: str | TaskType) -> str:
    try:
        return TaskType(task).value
    except ValueError:
        raise UnknownTask(f"unknown task {task!r}: use one of {', '.join(TASKS)}") from None


def get_default_provider_config(session: Session, task: str | TaskType) -> ProviderConfig | None:
    """The config that would serve `task` first (the seed's helper), ignoring limits."""
    rows = {row.id: row for row in session.scalars(select(ProviderConfig))}
    order = serving_order(check_task(task), [candidate_from(row) for row in rows.values()])
    return rows[order[0].config_id] if order else None  # type: ignore[index]
