"""Who would serve a task now and why each candidate is or is not eligible (`explain`), for
the console, the CLI and `Router.explain`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.crypto import SecretBox
from core.db import UNAVAILABLE, failure_reason
from core.models import ProviderConfig, TaskType, utcnow
from core.pricing import format_usd
from core.quota.ledger import QuotaLedger, Standing
from core.quota.reach import LedgerUnavailable
from core.routing.candidates import (
    Candidate,
    candidate_from,
    check_task,
    legacy_from,
    serving_order,
)
from core.routing.keyring import Keyring, KeyState, restart_hint


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
        Keyring(cipher),
        QuotaLedger(engine).standing,
    )


def plan(
    task: str,
    candidates: Sequence[Candidate],
    legacy: Sequence[Candidate],
    keys: Keyring,
    standing: Callable[[int, datetime], Standing],
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
    considered = serving_order(task, candidates, inactive=True)
    return RoutePlan(
        task,
        tuple(
            CandidatePlan(
                c.config_id,
                c.display_name,
                c.provider_type,
                c.model_name,
                *_eligibility(c, keys, standing, now),
            )
            for c in considered
        ),
    )


def _eligibility(
    candidate: Candidate,
    keys: Keyring,
    standing_of: Callable[[int, datetime], Standing],
    now: datetime,
) -> tuple[bool, str]:
    if not candidate.is_active:
        return False, "inactive"
    key_state = keys.state(candidate)
    if key_state is KeyState.MISSING:
        return False, f"its key cannot be decrypted: {restart_hint(candidate.config_id)}"
    if candidate.limited:
        assert candidate.config_id is not None
        try:
            standing = standing_of(candidate.config_id, now)
        except (*UNAVAILABLE, LedgerUnavailable) as exc:
            return False, (
                "its limits cannot be checked: the database did not answer "
                f"({failure_reason(exc)}); it serves only what this process's leases hold"
            )
        if full := _limit_reached(candidate, standing):
            return False, full
    why = "default for every task" if candidate.is_default else "serves this task"
    if candidate.limited:
        why += f" ({_left(candidate, standing)})"
    if key_state is KeyState.STALE:
        why += f" with the key it decrypted before; warning: {restart_hint(candidate.config_id)}"
    if candidate.last_test_success is False:
        return True, f"{why}; warning: its last credential test failed"
    return True, why


def _limit_reached(candidate: Candidate, standing: Standing) -> str | None:
    for period, limit, used, reserved, unit in _periods(candidate, standing):
        if limit is not None and used + reserved >= limit:
            if unit == "tokens":
                return (
                    f"{period} limit reached: {used:,} used + {reserved:,} reserved by running "
                    f"calls of {limit:,} tokens"
                )
            return (
                f"{period} budget reached: {format_usd(used)} spent + {format_usd(reserved)} "
                f"held by running calls of {format_usd(limit)}"
            )
    return None


def _left(candidate: Candidate, standing: Standing) -> str:
    """What each limit leaves, e.g. "left: 12,000 tokens today, $0.58 today, $9.10 this month"."""
    left = []
    for period, limit, used, reserved, unit in _periods(candidate, standing):
        if limit is not None:
            room = limit - used - reserved
            when = "today" if period == "daily" else "this month"
            left.append(
                f"{room:,} tokens {when}" if unit == "tokens" else f"{format_usd(room)} {when}"
            )
    return "left: " + ", ".join(left)


def _periods(
    candidate: Candidate, standing: Standing
) -> tuple[tuple[str, int | None, int, int, str], ...]:
    limits, s = candidate.limits, standing
    return (
        ("daily", limits.daily, s.day_used, s.day_reserved, "tokens"),
        ("monthly", limits.monthly, s.month_used, s.month_reserved, "tokens"),
        ("daily", limits.daily_micro_usd, s.day_used_micro_usd, s.day_reserved_micro_usd, "usd"),
        (
            "monthly",
            limits.monthly_micro_usd,
            s.month_used_micro_usd,
            s.month_reserved_micro_usd,
            "usd",
        ),
    )
