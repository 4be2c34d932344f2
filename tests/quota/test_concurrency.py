"""Token limits and dollar budgets hold across OS processes calling at once, and a crash leaves
nothing held."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import types
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.models import QuotaCounter, QuotaReservation, UsageLog, utcnow
from core.pricing import estimate_cost_usd, to_micro_usd, worst_case_micro_usd
from core.quota.leases import HOLD_EXPIRY
from core.quota.ledger import QuotaLedger, reservation_size
from core.usage.writer import SWEEP_EVERY
from tests.fakes import FakeProviderServer
from tests.fakes.provider_server import count_tokens, make_reply
from tests.support.database import MigratedDatabase
from tests.support.quota_worker import PROMPT, call_and_hang, hammer
from tests.support.routing import MODELS, add_config, allow_planted_keys


@pytest.fixture(autouse=True)
def plain_main_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned processes re-import __main__; after an AppTest that is a page script, which must
    not run in the workers. Give them an empty __main__ instead."""
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))


PROCESSES = 4
CALLS_PER_PROCESS = 25
CONCURRENCY = 5  # calls at once in each process
MAX_OUTPUT = 40
LIMIT = 18_000
# Exact: every call reserves its own tokens. Leased: leases of 4 calls, each at most half of
# what is left, so most of the run is served by leases and its end, near the limit, by exact
# reservations again: both paths and the switch between them.
LEASES = {
    "exact": {"lease_calls": 1},
    "leased": {"lease_calls": 4, "lease_share": 2},
}
# Streamed: the same through router.stream, which reserves and settles the same way.
CALLS = LEASES | {"streamed": {"lease_calls": 4, "lease_share": 2, "stream": 1}}


@pytest.fixture(params=sorted(LEASES))
def leases(request: pytest.FixtureRequest) -> dict[str, int]:
    return LEASES[request.param]


@pytest.mark.slow
@pytest.mark.parametrize("how", sorted(CALLS))
def test_many_processes_never_overspend_a_daily_limit(
    db: MigratedDatabase, fake_providers: FakeProviderServer, how: str
) -> None:
    leases = CALLS[how]
    allow_planted_keys(fake_providers)
    config = add_config(db, fake_providers, "openai", tasks=["extraction"], daily_token_limit=LIMIT)
    per_call = reservation_size(PROMPT, None, MAX_OUTPUT)
    uses = count_tokens([PROMPT]) + count_tokens([make_reply(PROMPT, MAX_OUTPUT)])
    calls = PROCESSES * CALLS_PER_PROCESS
    assert calls * uses > LIMIT  # even one call at a time, the limit is reached by usage
    lease_tokens = per_call * leases["lease_calls"] if leases["lease_calls"] > 1 else 0

    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(PROCESSES) as pool:
        results = pool.starmap(
            hammer,
            [
                (
                    db.settings,
                    CALLS_PER_PROCESS,
                    CONCURRENCY,
                    MAX_OUTPUT,
                    leases,
                )
            ]
            * PROCESSES,
        )

    outcomes: dict[str, int] = {}
    for result in results:
        for kind, n in result.items():
            outcomes[kind] = outcomes.get(kind, 0) + n
    round_trips = outcomes.pop("round_trips")
    print(f"{leases}: {outcomes}, {round_trips} reservations in the database")
    assert set(outcomes) == {"ok", "QuotaExceeded"}, outcomes
    assert sum(outcomes.values()) == calls
    # The limit was used, not just refused: a call is refused only when what is held covers the
    # limit, and each success holds at most per_call, each process's idle leases at most about
    # one lease and one call.
    assert outcomes["ok"] >= (LIMIT - PROCESSES * (lease_tokens + per_call)) // per_call
    if lease_tokens:
        assert round_trips < calls  # calls served by a lease made no round trip
    else:
        assert round_trips >= calls  # every call reserved for itself

    with db.session() as session:
        recorded = session.scalar(
            select(func.sum(UsageLog.total_tokens)).where(UsageLog.status == "success")
        )
        successes = session.scalar(select(func.count()).where(UsageLog.status == "success"))
        rejected = session.scalar(select(func.count()).where(UsageLog.status == "rejected"))
        counter = session.scalars(select(QuotaCounter)).one()
        held = session.scalars(select(QuotaReservation)).all()
    assert recorded is not None and recorded <= LIMIT
    assert (successes, rejected) == (outcomes["ok"], outcomes["QuotaExceeded"])
    assert (counter.config_id, counter.used_tokens, counter.reserved_tokens) == (
        config,
        recorded,
        0,
    )
    assert held == []


@pytest.mark.slow
@pytest.mark.parametrize("how", sorted(CALLS))
def test_many_processes_never_overspend_a_dollar_budget(
    db: MigratedDatabase, fake_providers: FakeProviderServer, how: str
) -> None:
    """The same with a daily dollar budget: each call holds its worst-case cost and settles to
    what it really cost, and the usage rows' recorded cost stays within the budget."""
    leases = CALLS[how]
    allow_planted_keys(fake_providers)
    model = MODELS["openai"]
    now = utcnow()
    bound = reservation_size(PROMPT, None, MAX_OUTPUT) - MAX_OUTPUT
    worst = worst_case_micro_usd("openai", model, bound, MAX_OUTPUT, now)
    real = estimate_cost_usd(
        "openai",
        model,
        count_tokens([PROMPT]),
        count_tokens([make_reply(PROMPT, MAX_OUTPUT)]),
        now,
    )
    assert worst is not None and real is not None
    cost = to_micro_usd(real)
    assert cost is not None and 0 < cost < worst  # settling gives back the difference
    calls = PROCESSES * CALLS_PER_PROCESS
    budget = 80 * cost  # reached by usage: 100 calls cost more
    config = add_config(
        db, fake_providers, "openai", tasks=["extraction"], daily_budget_micro_usd=budget
    )

    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(PROCESSES) as pool:
        results = pool.starmap(
            hammer, [(db.settings, CALLS_PER_PROCESS, CONCURRENCY, MAX_OUTPUT, leases)] * PROCESSES
        )
    outcomes: dict[str, int] = {}
    for result in results:
        for kind, n in result.items():
            outcomes[kind] = outcomes.get(kind, 0) + n
    outcomes.pop("round_trips")
    assert set(outcomes) == {"ok", "QuotaExceeded"}, outcomes
    assert sum(outcomes.values()) == calls
    lease_calls = leases["lease_calls"] if leases["lease_calls"] > 1 else 0
    # The budget was spent, not just refused. The last refusal saw less than a worst case left
    # beside what the successes had spent or still held (each at most a worst case: a call holds
    # it until the writer settles it) and the idle leases (at most a lease each).
    floor = budget - worst - PROCESSES * lease_calls * worst
    assert floor > budget // 2
    assert outcomes["ok"] >= floor // worst

    with db.session() as session:
        spent = session.scalar(select(func.sum(UsageLog.cost_micro_usd)))
        successes = session.scalar(select(func.count()).where(UsageLog.status == "success"))
        rejected = session.scalars(
            select(UsageLog.error_message).where(UsageLog.status == "rejected")
        ).all()
        counter = session.scalars(select(QuotaCounter)).one()
        held = session.scalars(select(QuotaReservation)).all()
    assert spent is not None and spent <= budget
    assert successes == outcomes["ok"] and len(rejected) == outcomes["QuotaExceeded"]
    assert set(rejected) == {"daily or monthly dollar budget reached"}
    assert (counter.config_id, counter.used_micro_usd, counter.reserved_micro_usd) == (
        config,
        spent,
        0,
    )
    assert counter.reserved_tokens == 0 and held == []


@pytest.mark.real_clock  # its worker process runs on the real clock
@pytest.mark.slow
@pytest.mark.parametrize("ending", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_process_killed_mid_call_leaves_no_reservation_behind(
    db: MigratedDatabase,
    fake_providers: FakeProviderServer,
    leases: dict[str, int],
    ending: signal.Signals,
) -> None:
    """A crash, or a deploy's SIGTERM to a service with no shutdown hook, mid-call."""
    allow_planted_keys(fake_providers)
    add_config(db, fake_providers, "openai", tasks=["extraction"], daily_token_limit=LIMIT)
    fake_providers.fail_next("openai", mode="slow", delay=60)

    child = multiprocessing.get_context("spawn").Process(
        target=call_and_hang, args=(db.settings, leases)
    )
    child.start()
    try:
        held = _wait_for_reservation(db, child)
    finally:
        os.kill(child.pid, ending)  # type: ignore[arg-type]
        child.join()
    killed_at = utcnow()
    assert child.exitcode == -ending
    assert held.tokens == reservation_size(PROMPT, None, 10) * leases["lease_calls"]

    # Its last renewal came before the kill: the hold expires within HOLD_EXPIRY of it, and a
    # sweep (every SWEEP_EVERY in any router or console) then frees it: within a minute.
    with db.session() as session:
        expires_at = session.get_one(QuotaReservation, held.id).expires_at
    assert expires_at <= killed_at + HOLD_EXPIRY
    assert timedelta(seconds=60) >= HOLD_EXPIRY + SWEEP_EVERY
    ledger = QuotaLedger(db.engine)
    assert ledger.sweep(utcnow()) == 0  # not yet expired: the call could still be running
    assert ledger.sweep(killed_at + HOLD_EXPIRY) == 1
    with db.session() as session:
        assert session.scalars(select(QuotaReservation)).all() == []
        counter = session.scalars(select(QuotaCounter)).one()
    assert (counter.used_tokens, counter.reserved_tokens) == (0, 0)


def _wait_for_reservation(
    db: MigratedDatabase, child: multiprocessing.process.BaseProcess
) -> QuotaReservation:
    """Poll until the child holds its reservation (it starts a Python process: seconds)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert child.is_alive(), f"worker exited early with {child.exitcode}"
        with db.session() as session:
            held = session.scalars(select(QuotaReservation)).first()
        if held is not None:
            return held
        time.sleep(0.05)
    pytest.fail("the worker never reserved tokens")
