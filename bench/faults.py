"""Issue 13's fault figures, measured again the way they were first measured.

    .venv/bin/python bench/faults.py [--callers 25] [--outage 10] [only these: restart freeze
        sigterm sigterm-hook sigkill poison cancel rotation]

A PostgreSQL of the script's own (initdb/pg_ctl in a temporary folder, as the fault tests
use) and the fake provider server. A "service" is a process of its own with
`Router.from_env()` and `--callers` concurrent callers, each calling in a loop; the script
stops, freezes or restarts the database, or kills the service, and then counts what callers
saw against what the database holds:

- restart / freeze: the database stopped (or SIGSTOPped) for --outage seconds while an
  unlimited and a limited task are called. Calls that failed, and of what type (every one
  should be a RoutingError); unlimited calls served during the outage; the longest call;
  success rows against the successes callers saw; counters against rows; holds left.
- sigterm / sigkill: a service calling a limited task is killed mid-run. Rows stored against
  successes seen (another process ships its spool), and how long its holds outlive it.
  sigterm-hook: the same SIGTERM to a service whose shutdown hook closes its router.
- poison: 200 good calls and one with user_id="abc", together.
- cancel: 20 calls to an unlimited config, cancelled while the provider is answering.
- rotation: `keys rotate` and a config edit under a running service started with the old key,
  then a new service with only the old key.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, update

from core.config import Settings
from core.crypto import generate_key
from core.db import make_engine, upgrade
from core.models import ProviderConfig, QuotaCounter, QuotaReservation, UsageLog
from core.routing import Router, RoutingError
from core.usage.writer import UsageWriter
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase
from tests.support.own_postgres import OwnPostgres
from tests.support.routing import add_config, allow_planted_keys

PROMPT = "Extract the job title from: Senior Data Engineer (Python, SQL), Berlin, hybrid."
PROVIDER_DELAY_S = 0.005
LIMIT = 10**9  # limited, so every call holds tokens; never reached


def pace(fake: FakeProviderServer) -> None:
    """Every answer after PROVIDER_DELAY_S, from the planted keys only."""
    fake.reset()
    allow_planted_keys(fake)
    for provider in ("openai", "anthropic"):
        fake.fail_next(provider, mode="slow", delay=PROVIDER_DELAY_S, times=10**7)


def service(
    environ: dict[str, str],
    tasks: list[str],
    callers: int,
    stop: Event,
    successes: Any,
    report: Connection,
    hook: bool = False,
) -> None:
    """Call `tasks` (round robin over callers) until `stop`; report every outcome. With
    `hook`, SIGTERM stops it as a service's shutdown hook would (README: aclose)."""
    os.environ.update(environ)

    async def main() -> None:
        router = Router.from_env(max_retries=0)
        if hook:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        outcomes: list[tuple[float, float, str, str, bool]] = []

        async def caller(n: int) -> None:
            task = tasks[n % len(tasks)]
            while not stop.is_set():
                started = time.time()
                try:
                    await router.generate(task, PROMPT, max_output_tokens=64)
                except Exception as exc:
                    outcome, routing = type(exc).__name__, isinstance(exc, RoutingError)
                    await asyncio.sleep(0.05)  # a failing caller does not spin
                else:
                    outcome, routing = "ok", True
                    successes.value += 1
                outcomes.append((started, time.time() - started, task, outcome, routing))

        report.send("ready")
        await asyncio.gather(*(caller(n) for n in range(callers)))
        await router.aclose()
        report.send(outcomes)

    asyncio.run(main())


class Bench:
    def __init__(self, server: OwnPostgres, fake: FakeProviderServer, callers: int) -> None:
        self.server, self.fake, self.callers = server, fake, callers
        self.spawn = multiprocessing.get_context("spawn")

    def database(self, key: str | None = None) -> MigratedDatabase:
        url = self.server.create_database()
        settings = Settings(
            database_url=url,
            fernet_keys=(key or generate_key(),),
            data_dir=Path(tempfile.mkdtemp(prefix="bench-faults-")),
        )
        engine = make_engine(settings)
        upgrade(engine)
        return MigratedDatabase("postgresql", url, engine, settings)

    def environ(self, db: MigratedDatabase, keys: str | None = None) -> dict[str, str]:
        return {
            "AI_CONSOLE_DATABASE_URL": db.url,
            "AI_CONSOLE_FERNET_KEYS": keys or ",".join(db.settings.fernet_keys),
            "AI_CONSOLE_DATA_DIR": str(db.settings.data_dir),
            "AI_CONSOLE_BASE_URL_ALLOWLIST": "127.0.0.1",
        }

    def start(
        self, environ: dict[str, str], tasks: list[str], hook: bool = False
    ) -> tuple[Any, ...]:
        # No lock: only the service writes it, and a SIGKILL must not leave it held.
        stop, successes = self.spawn.Event(), self.spawn.Value("q", 0, lock=False)
        ours, theirs = self.spawn.Pipe()
        process = self.spawn.Process(
            target=service, args=(environ, tasks, self.callers, stop, successes, theirs, hook)
        )
        process.start()
        assert ours.recv() == "ready"
        return process, stop, successes, ours

    @staticmethod
    def finish(started: tuple[Any, ...]) -> list[tuple[float, float, str, str, bool]]:
        process, stop, _, pipe = started
        stop.set()
        outcomes = pipe.recv()
        process.join()
        return outcomes


def accounted(db: MigratedDatabase, seen: int) -> str:
    with db.engine.connect() as conn:
        rows = conn.execute(select(UsageLog.status, func.count()).group_by(UsageLog.status)).all()
        used = conn.scalar(select(func.coalesce(func.sum(UsageLog.total_tokens), 0))) or 0
        counted = conn.scalar(select(func.coalesce(func.sum(QuotaCounter.used_tokens), 0))) or 0
        holds = conn.scalar(select(func.count()).select_from(QuotaReservation)) or 0
    by_status = dict(rows)
    lost = seen - by_status.get("success", 0)
    return (
        f"successes seen {seen}, success rows {by_status.get('success', 0)} (lost {lost}); "
        f"rows by status {by_status}; counters {counted} = row tokens {used}: "
        f"{'yes' if counted == used else 'NO'}; holds left {holds}"
    )


def outage(bench: Bench, kind: str, seconds: float) -> None:
    db = bench.database()
    add_config(db, bench.fake, "openai", tasks=["extraction"])
    add_config(db, bench.fake, "claude", tasks=["cv_draft"], daily_token_limit=LIMIT)
    run = bench.start(bench.environ(db), ["extraction"] * 4 + ["cv_draft"])
    time.sleep(3)
    away, back = (
        (bench.server.stop, bench.server.start)
        if kind == "restart"
        else (bench.server.freeze, bench.server.thaw)
    )
    began = time.time()
    away()
    time.sleep(seconds)
    back()
    ended = time.time()
    time.sleep(5)
    outcomes = bench.finish(run)
    during = [o for o in outcomes if began <= o[0] < ended]
    failed = Counter(o[3] for o in outcomes if o[3] != "ok")
    print(
        f"{kind} ({seconds:g} s, {bench.callers} callers): {len(outcomes)} calls, failed by type "
        f"{dict(failed)}, not a RoutingError: {sum(not o[4] for o in outcomes)}"
    )
    print(
        f"  during it: unlimited served {sum(o[3] == 'ok' for o in during if o[2] == 'extraction')}"
        f" of {sum(o[2] == 'extraction' for o in during)}, limited served "
        f"{sum(o[3] == 'ok' for o in during if o[2] == 'cv_draft')} of "
        f"{sum(o[2] == 'cv_draft' for o in during)}; "
        f"longest call {max(o[1] for o in outcomes):.2f} s"
    )
    print("  " + accounted(db, sum(o[3] == "ok" for o in outcomes)))
    db.engine.dispose()


def killed(bench: Bench, ending: signal.Signals, hook: bool = False) -> None:
    db = bench.database()
    add_config(db, bench.fake, "claude", tasks=["cv_draft"], daily_token_limit=LIMIT)
    process, _, successes, pipe = bench.start(bench.environ(db), ["cv_draft"], hook)
    time.sleep(3)
    os.kill(process.pid, ending)
    if hook:
        pipe.recv()
    process.join()
    killed_at = time.monotonic()
    with db.engine.connect() as conn:
        stored = conn.scalar(select(func.count()).select_from(UsageLog))
        held = conn.execute(
            select(func.count(), func.coalesce(func.sum(QuotaReservation.tokens), 0))
        ).one()
    print(
        f"{ending.name}{' to a service with a shutdown hook' if hook else ''} mid-run "
        f"({bench.callers} callers): {successes.value} successes seen, "
        f"{stored} rows stored when it ended; {held[0]} holds ({held[1]} tokens) left"
    )
    # Another process on the machine (here: the console's writer) ships its spool and sweeps.
    other = UsageWriter(db.engine, _ledger(db), db.settings.usage_spool_dir)
    other.flush()  # its first turn ships the spools of processes that ended
    left = None
    while time.monotonic() - killed_at < 120:
        with db.engine.connect() as conn:
            left = conn.scalar(select(func.count()).select_from(QuotaReservation))
        if not left:
            break
        time.sleep(0.5)
    released = f"{time.monotonic() - killed_at:.0f} s after the kill" if not left else "NOT"
    print(f"  holds released {released}")
    other.close()
    print("  " + accounted(db, successes.value))
    db.engine.dispose()


def _ledger(db: MigratedDatabase) -> Any:
    from core.quota.ledger import QuotaLedger

    return QuotaLedger(db.engine)


def poison(bench: Bench) -> None:
    db = bench.database()
    add_config(db, bench.fake, "openai", tasks=["extraction"])
    os.environ.update(bench.environ(db))

    async def main() -> Counter[str]:
        router = Router.from_env(max_retries=0)
        calls = [router.generate("extraction", PROMPT, user_id=n) for n in range(200)]
        calls.insert(100, router.generate("extraction", PROMPT, user_id="abc"))  # type: ignore[arg-type]
        ended = await asyncio.gather(*calls, return_exceptions=True)
        await router.aclose()
        return Counter(
            "ok" if not isinstance(e, BaseException) else type(e).__name__ for e in ended
        )

    seen = asyncio.run(main())
    with db.engine.connect() as conn:
        good = conn.scalar(select(func.count()).where(UsageLog.user_id.is_not(None)))
    print(f"poison: 200 good calls and user_id='abc': callers saw {dict(seen)}; good rows {good}")
    db.engine.dispose()


def cancel(bench: Bench) -> None:
    db = bench.database()
    add_config(db, bench.fake, "openai", tasks=["extraction"], daily_token_limit=LIMIT)
    os.environ.update(bench.environ(db))
    bench.fake.reset()
    allow_planted_keys(bench.fake)
    bench.fake.fail_next("openai", mode="slow", delay=2.0, times=20)

    async def main() -> None:
        router = Router.from_env(max_retries=0)
        calls = [asyncio.create_task(router.generate("extraction", PROMPT)) for _ in range(20)]
        await asyncio.sleep(0.5)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await router.aclose()

    asyncio.run(main())
    print("cancel: 20 calls cancelled mid-call; " + accounted(db, 0))
    db.engine.dispose()


def rotation(bench: Bench) -> None:
    old, new = generate_key(), generate_key()
    db = bench.database(old)
    config = add_config(db, bench.fake, "openai", tasks=["extraction"])
    running = bench.start(bench.environ(db, old), ["extraction"])
    time.sleep(2)
    rotated = subprocess.run(
        [sys.executable, "-m", "core", "keys", "rotate"],
        env=os.environ | bench.environ(db, f"{new},{old}"),
        capture_output=True,
        text=True,
        check=False,
    )
    with db.engine.begin() as conn:  # any later change makes routers re-read the configs
        conn.execute(
            update(ProviderConfig)
            .where(ProviderConfig.id == config)
            .values(description="edited", version=ProviderConfig.version + 1)
        )
    changed = time.time()
    time.sleep(5)
    outcomes = bench.finish(running)
    after = [o for o in outcomes if o[0] >= changed + 1]
    print(
        f"rotation: keys rotate exit {rotated.returncode}; the service with the old key, after "
        f"the edit: {sum(o[3] == 'ok' for o in after)} of {len(after)} calls served"
    )
    with db.engine.connect() as conn:
        before = conn.scalar(select(func.count()).select_from(UsageLog)) or 0
    fresh = bench.start(bench.environ(db, old), ["extraction"])
    time.sleep(3)
    outcomes = bench.finish(fresh)
    with db.engine.connect() as conn:
        rows = (conn.scalar(select(func.count()).select_from(UsageLog)) or 0) - before
    print(
        f"  a new service with only the old key, 3 s: {len(outcomes)} calls, "
        f"{dict(Counter(o[3] for o in outcomes))}; usage rows it wrote {rows}"
    )
    db.engine.dispose()


SCENARIOS = (
    "restart", "freeze", "sigterm", "sigterm-hook", "sigkill", "poison", "cancel", "rotation"
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=25)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("only", nargs="*", metavar="scenario", help=", ".join(SCENARIOS))
    args = parser.parse_args()
    if unknown := set(args.only) - set(SCENARIOS):
        parser.error(f"no scenario {', '.join(sorted(unknown))}; there are {', '.join(SCENARIOS)}")
    server = OwnPostgres()
    server.start()
    try:
        with FakeProviderServer(keep_alive=True) as fake:
            bench = Bench(server, fake, args.callers)
            for name in args.only or SCENARIOS:
                pace(fake)
                if name in ("restart", "freeze"):
                    outage(bench, name, args.outage)
                elif name.startswith("sig"):
                    ending = signal.SIGKILL if name == "sigkill" else signal.SIGTERM
                    killed(bench, ending, hook=name.endswith("hook"))
                else:
                    {"poison": poison, "cancel": cancel, "rotation": rotation}[name](bench)
    finally:
        server.close()


if __name__ == "__main__":
    main()
