"""Which stored configs may serve a task, in what order, and why: the router's view of configs.

`ConfigCache` keeps every config as a `Candidate` (key still encrypted) and re-reads them only
when a cheap fingerprint query shows a change, at most once per refresh interval, so calls do
not read configs from the database and a console edit still reaches running routers within
seconds. `candidates_for` orders them for a task (DESIGN.md, task routing semantics);
`explain` and `plan` say for the console and for `Router.explain` who would serve a task now
and why each candidate is or is not eligible.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core.crypto import DecryptionError, SecretBox
from core.models import ProviderConfig, TaskType, utcnow
from core.quota import QuotaLedger, Standing

TASKS = tuple(task.value for task in TaskType)
LEGACY_PROVIDERS = (  # (type, key variable, model variable, default model)
    ("gemini", "GEMINI_API_KEY", "GEMINI_MODEL_FAST", "gemini-2.5-flash"),
    ("openai", "OPENAI_API_KEY", "OPENAI_MODEL", "gpt-4o-mini"),
    ("claude", "ANTHROPIC_API_KEY", "ANTHROPIC_MODEL", "claude-haiku-4-5"),
)


# --- errors ---------------------------------------------------------------------------------------


class RoutingError(Exception):
    """Base of everything core.routing raises."""


class UnknownTask(RoutingError, ValueError):
    """The task is not one of extraction, cv_draft, cover_letter, validation."""


class NoProviderAvailable(RoutingError):
    """No config (and no legacy environment variable) serves the task."""


# --- candidates and plans -------------------------------------------------------------------------


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
class Snapshot:
    """Every stored config at one moment (the router's cache of them)."""

    candidates: tuple[Candidate, ...] = ()
    fingerprint: tuple[Any, ...] | None = None
    checked_at: float = field(default=-1e9)
    generation: int = 0


# --- the configs a router caches ------------------------------------------------------------------


class ConfigCache:
    """Every stored config, re-read when the fingerprint changes (at most every `refresh_s`)."""

    def __init__(self, engine: Engine, refresh_s: float) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self.snapshot = Snapshot()

    def stale(self) -> bool:
        """Whether the fingerprint is due to be checked again."""
        return time.monotonic() - self.snapshot.checked_at > self._refresh_s

    def refresh(self, force: bool = False) -> Snapshot:
        """The configs now: re-read if the fingerprint changed (unless checked just now)."""
        with self._lock:
            current = self.snapshot
            if not force and time.monotonic() - current.checked_at <= self._refresh_s:
                return current
            with Session(self._engine) as session:
                fingerprint = tuple(session.execute(_FINGERPRINT).one())
                if fingerprint != current.fingerprint:
                    rows = session.scalars(select(ProviderConfig)).all()
                    current = Snapshot(
                        tuple(candidate_from(row) for row in rows),
                        fingerprint,
                        generation=current.generation + 1,
                    )
            self.snapshot = replace(current, checked_at=time.monotonic())
            return self.snapshot


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
    active = [c for c in snapshot.candidates if c.is_active]
    chosen = sorted((c for c in active if task in c.tasks), key=lambda c: (c.priority, c.config_id))
    chosen += [c for c in active if c.is_default and c not in chosen]
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
        candidates = tuple(candidate_from(row) for row in session.scalars(select(ProviderConfig)))
    return plan(
        check_task(task),
        candidates,
        legacy_from(os.environ if environ is None else environ),
        cipher,
        QuotaLedger(engine),
    )


def plan(
    task: str,
    candidates: Sequence[Candidate],
    legacy: Sequence[Candidate],
    cipher: SecretBox,
    ledger: QuotaLedger,
) -> RoutePlan:
    """Every candidate that could serve `task`, in order, eligible or not and why (the legacy
    ones when no config is stored)."""
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


def check_task(task: str | TaskType) -> str:
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
    name = check_task(task)
    flag = getattr(ProviderConfig, f"default_for_{name}")
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
