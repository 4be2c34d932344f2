"""One try at one candidate, from its start to the one usage row it writes.

Every attempt, whatever its end (refused by a limit, failed, succeeded, cancelled by the
caller, or ended by an exception of ours), writes exactly one usage row, gives a lease back what its
hold did not use, and updates the Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from core import metrics
from core.models import UsageSource, UsageStatus, utcnow
from core.pricing import Priced, to_micro_usd
from core.providers.base import GenerationResult
from core.providers.errors import ProviderError
from core.providers.redaction import redact
from core.usage.records import UsageRecord

if TYPE_CHECKING:
    from core.quota.leases import QuotaLeases
    from core.quota.ledger import Reservation
    from core.routing.candidates import Candidate
    from core.usage.writer import UsageWriter

log = logging.getLogger(__name__)


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


class Recorder:
    """Where finished attempts go: the usage writer, and the lease that held their tokens."""

    def __init__(self, writer: UsageWriter, leases: QuotaLeases) -> None:
        self._writer = writer
        self._leases = leases

    def submit(self, record: UsageRecord, reservation: Reservation | None) -> None:
        if reservation is not None:
            self._leases.spent(reservation, record.total_tokens, _cost(record, reservation))
        self._writer.submit(record, reservation)


@dataclass(frozen=True)
class Caller:
    """Who a call is for, as its usage rows say (core/usage/attribution.py): checked."""

    user_id: int | None = None
    service: str = ""
    tags: str = ""  # "key=value,..." sorted by key


@dataclass
class Trial:
    """One attempt in progress. Exactly one of its ending methods records it."""

    recorder: Recorder
    candidate: Candidate
    task: str
    caller: Caller
    started: datetime = field(default_factory=utcnow)
    reservation: Reservation | None = None
    error: ProviderError | None = None
    recorded: bool = False
    fitted: int | None = None  # the max_output_tokens its answer was shortened to (budgets.py)

    def elapsed_ms(self) -> int:
        return round((utcnow() - self.started).total_seconds() * 1000)

    def refused(self, reason: str | None = None) -> Attempt:
        """No limit left for this call (or, `reason`, none can be held)."""
        return self.failed(UsageStatus.REJECTED, "quota", reason or _limits_reached(self.candidate))

    def failed(
        self,
        status: str,
        error_type: str,
        message: str,
        latency_ms: int = 0,
        used: tuple[int, int] = (0, 0),
    ) -> Attempt:
        """Ended without an answer; `used`: the (input, output) tokens it had already cost
        (a stream that broke off), priced like an answer's."""
        record = self._row(status, error_type, message, latency_ms, None, used)
        self._submit(record)
        metrics.observe(
            self.candidate.provider_type, self.task, str(status), record.total_tokens, latency_ms
        )
        c = self.candidate
        return Attempt(
            c.config_id,
            c.provider_type,
            c.model_name,
            str(status),
            error_type,
            record.error_message,
            latency_ms,
        )

    def succeeded(self, result: GenerationResult, before: list[Attempt]) -> GenerationResult:
        c = self.candidate
        used = (result.input_tokens, result.output_tokens)
        record = self._row(UsageStatus.SUCCESS, None, None, result.latency_ms, result, used)
        priced = record.priced
        self._submit(record)
        metrics.observe(
            c.provider_type, self.task, "success", result.total_tokens, result.latency_ms
        )
        return replace(
            result,
            config_id=c.config_id,
            priced=priced,
            attempts=tuple(before),
            fitted_max_output_tokens=self.fitted,
        )

    def abandoned(
        self, exc: BaseException | None, used: tuple[int, int] = (0, 0), note: str = ""
    ) -> None:
        """Ended by the caller (a cancellation, or `exc` None: it stopped reading a stream)
        or by an exception of ours: logged as cancelled or as an internal error, with the
        time it ran and the tokens it had `used`, and its hold settled."""
        if self.recorded:
            return
        if exc is None or isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            status, error_type, message = (
                UsageStatus.CANCELLED,
                "cancelled",
                "cancelled by the caller",
            )
        else:
            status, error_type, message = UsageStatus.ERROR, "internal", type(exc).__name__
        latency_ms = self.elapsed_ms()
        record = self._row(status, error_type, message + note, latency_ms, None, used)
        self._submit(record)
        metrics.observe(
            self.candidate.provider_type, self.task, str(status), record.total_tokens, latency_ms
        )

    def _submit(self, record: UsageRecord) -> None:
        self.recorded = True
        self.recorder.submit(record, self.reservation)

    def _row(
        self,
        status: str,
        error_type: str | None,
        message: str | None,
        latency_ms: int,
        result: GenerationResult | None = None,
        used: tuple[int, int] = (0, 0),
    ) -> UsageRecord:
        c = self.candidate
        model = result.model_name if result else c.model_name
        cached = result.cached_input_tokens if result else 0
        written = result.cache_write_tokens if result else 0
        # Priced later, off the caller's path: by the usage writer for the row, on first read
        # for a result (core/pricing.py).
        priced = (
            Priced(c.provider_type, (model, c.model_name), *used, self.started, cached, written)
            if result is not None or any(used)
            else None
        )
        return UsageRecord(
            provider_config_id=c.config_id,
            user_id=self.caller.user_id,
            service=self.caller.service,
            tags=self.caller.tags,
            provider_type=c.provider_type,
            model_name=model,
            task_type=self.task,
            status=str(status),
            input_tokens=used[0],
            output_tokens=used[1],
            total_tokens=result.total_tokens if result else sum(used),
            priced=priced,
            error_type=error_type,
            error_message=redact(message, [c.secret]) if message else None,
            latency_ms=latency_ms,
            source=UsageSource.LEGACY_ENV if c.legacy else UsageSource.ROUTER,
            created_at=self.started,
            cached_input_tokens=cached,
            cache_write_tokens=written,
            reasoning_tokens=result.reasoning_tokens if result else 0,
        )


def _cost(record: UsageRecord, hold: Reservation) -> int:
    """What a call under a dollar budget cost, for its lease's balance: priced here, on the
    caller's path, only when it held money (unpriced with tokens used: all it held)."""
    if not hold.micro_usd or not record.total_tokens:
        return 0
    cost = to_micro_usd(record.priced.usd) if record.priced is not None else None
    return hold.micro_usd if cost is None else cost


def _limits_reached(candidate: Candidate) -> str:
    limits = candidate.limits
    kinds = [
        kind
        for kind, periods in (
            ("token limit", (limits.daily, limits.monthly)),
            ("dollar budget", (limits.daily_micro_usd, limits.monthly_micro_usd)),
        )
        if any(limit is not None for limit in periods)
    ]
    return f"daily or monthly {' or '.join(kinds) or 'limit'} reached"
