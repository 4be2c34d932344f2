"""Overhead of core.routing over a bare SDK call, on SQLite and PostgreSQL.

    .venv/bin/python bench/routing.py [--calls 500] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

Routes N calls through Router.generate (limits on, so every call holds tokens against them and
logs a usage row) and the same N calls through a bare openai.AsyncOpenAI client, both to the
fake provider server running in its own process, interleaved so drift hits both alike. Prints
p50/p99 of each and the ratio routed/direct. The target is p50 ratio <= 1.20 on PostgreSQL.
The last row turns quota leases off (lease_calls=1), so every call reserves in the database.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai

from core.config import Settings
from core.crypto import SecretBox, generate_key
from core.db import make_engine, upgrade
from core.models import ProviderConfig
from core.quota.leases import LEASE_CALLS
from core.routing import Router
from tests.fakes import FakeProviderServer
from tests.support.database import PostgresServer

KEY = "sk-bench-0000000000000000"
PROMPT = "Extract the job title from: Senior Data Engineer (Python, SQL), Berlin, hybrid."


def serve(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with FakeProviderServer() as server:
        server.api_keys["openai"] = {KEY}
        queue.put(server.openai_base_url)
        time.sleep(3600)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def measure(
    url: str, base_url: str, calls: int, warmup: int, lease_calls: int = LEASE_CALLS
) -> tuple[list[float], ...]:
    key = generate_key()
    # The fake provider listens on loopback, which the egress policy refuses unless allowed.
    settings = Settings(
        database_url=url,
        fernet_keys=(key,),
        base_url_allowlist=("127.0.0.1",),
        data_dir=Path(tempfile.mkdtemp(prefix="bench-routing-")),  # its usage spool
    )
    engine = make_engine(settings)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            ProviderConfig.__table__.insert().values(
                provider_type="openai",
                model_name="gpt-4o-mini",
                display_name="bench",
                api_key_encrypted=SecretBox([key]).encrypt(KEY),
                key_last4=KEY[-4:],
                base_url=base_url,
                default_for_extraction=True,
                is_active=True,
                is_default=False,
                priority=1,
                version=1,
                description="",
                daily_token_limit=10**12,
                monthly_token_limit=10**13,
            )
        )
    router = Router(
        settings=settings, engine=engine, max_retries=0, environ={}, lease_calls=lease_calls
    )
    direct = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)

    async def routed_call() -> float:
        started = time.perf_counter()
        await router.generate("extraction", PROMPT, max_output_tokens=64)
        return (time.perf_counter() - started) * 1000

    async def direct_call() -> float:
        started = time.perf_counter()
        await direct.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": PROMPT}],
            max_completion_tokens=64,
        )
        return (time.perf_counter() - started) * 1000

    for _ in range(warmup):
        await routed_call()
        await direct_call()
    routed, bare = [], []
    for n in range(calls):
        first, second = (routed_call, direct_call) if n % 2 else (direct_call, routed_call)
        a, b = await first(), await second()
        (routed if first is routed_call else bare).append(a)
        (bare if first is routed_call else routed).append(b)
    await router.aclose()
    await direct.close()
    engine.dispose()
    return routed, bare


def report(name: str, routed: list[float], bare: list[float]) -> None:
    r50, b50 = percentile(routed, 50), percentile(bare, 50)
    r99, b99 = percentile(routed, 99), percentile(bare, 99)
    print(
        f"{name:<11} direct p50 {b50:6.2f} ms  p99 {b99:6.2f} ms | "
        f"routed p50 {r50:6.2f} ms  p99 {r99:6.2f} ms | "
        f"ratio p50 {r50 / b50:4.2f}  p99 {r99 / b99:4.2f}  "
        f"(+{r50 - b50:.2f} ms at p50)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--pg",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="an existing database; a throwaway one is created beside it",
    )
    args = parser.parse_args()

    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()  # type: ignore[type-arg]
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(queue,), daemon=True)
    server.start()
    base_url = queue.get(timeout=30)
    print(
        f"{args.calls} calls each, after {args.warmup} warm-up calls; fake provider in its own "
        "process; limits and usage logging on"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            report("SQLite", *asyncio.run(measure(url, base_url, args.calls, args.warmup)))
        pg = PostgresServer(args.pg)
        pg_url = pg.create()
        try:
            report("PostgreSQL", *asyncio.run(measure(pg_url, base_url, args.calls, args.warmup)))
        finally:
            pg.drop(pg_url)
        pg_url = pg.create()
        try:
            exact = measure(pg_url, base_url, args.calls, args.warmup, lease_calls=1)
            report("PG, exact", *asyncio.run(exact))
        finally:
            pg.drop(pg_url)
            pg.admin.dispose()
    finally:
        server.kill()


if __name__ == "__main__":
    main()
