"""Overhead of core.routing over a bare SDK call, on SQLite and PostgreSQL.

    .venv/bin/python bench/routing.py [--calls 2000] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

A service that routes its calls, as it runs: a process of its own with `Router.from_env()`
(its own engine, the default retries and refresh; limits on, so every call holds tokens and
logs a usage row through the spool), calling the fake provider server (another process,
answering each request after PROVIDER_DELAY_S on a kept-alive connection, as a fast real
endpoint does). The baseline is another process making the same calls with a bare
openai.AsyncOpenAI client. The two take turns in blocks of BLOCK calls, so drift hits both
alike, and neither shares an interpreter with the other. (An earlier version ran both in one
process against a fake that closed every connection: the router's threads slowed the direct
calls too, and connection set-up hid the rest.) Prints p50/p99 of each and the ratio
routed/direct (issue 13's target on PostgreSQL: p50 ratio <= 1.10, p99 overhead <= 1 ms).
"PG, streamed" streams the same calls (router.stream against the SDK's stream=True) and
measures the time to the first piece and to the end of the answer. The last row turns quota
leases off (lease_calls=1), so every call reserves in the database.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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


PROVIDER_DELAY_S = 0.0025
BLOCK = 25


def serve(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with FakeProviderServer(keep_alive=True) as server:
        server.api_keys["openai"] = {KEY}
        server.fail_next("openai", mode="slow", delay=PROVIDER_DELAY_S, times=100_000)
        queue.put(server.openai_base_url)
        time.sleep(3600)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def caller(  # type: ignore[no-untyped-def]
    kind: str, base_url: str, environ: dict[str, str], lease_calls: int, stream: bool, conn
) -> None:
    """A process that makes the calls it is asked for, `BLOCK` at a time, and sends back their
    latencies in ms: through Router.from_env() ("routed") or a bare SDK client ("direct").
    With `stream`, each call is streamed and the latency is (to the first piece, to the end)."""
    os.environ.update(environ)

    async def main() -> None:
        if kind == "routed":
            router = Router.from_env(lease_calls=lease_calls)

            async def call() -> None:
                await router.generate("extraction", PROMPT, max_output_tokens=64)

            async def streamed() -> AsyncIterator[str]:
                async with router.stream("extraction", PROMPT, max_output_tokens=64) as pieces:
                    async for piece in pieces:
                        yield piece

            close = router.aclose
        else:
            direct = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
            request: dict[str, Any] = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": PROMPT}],
                "max_completion_tokens": 64,
            }

            async def call() -> None:
                await direct.chat.completions.create(**request)

            async def streamed() -> AsyncIterator[str]:
                chunks = await direct.chat.completions.create(
                    **request, stream=True, stream_options={"include_usage": True}
                )
                async with chunks:
                    async for chunk in chunks:
                        if chunk.choices and chunk.choices[0].delta.content:
                            yield chunk.choices[0].delta.content

            close = direct.close
        while (n := conn.recv()) is not None:
            latencies: list[Any] = []
            for _ in range(n):
                started = time.perf_counter()
                if not stream:
                    await call()
                    latencies.append((time.perf_counter() - started) * 1000)
                    continue
                first = None
                async for _piece in streamed():
                    first = first or time.perf_counter()
                ended = time.perf_counter()
                latencies.append((((first or ended) - started) * 1000, (ended - started) * 1000))
            conn.send(latencies)
        await close()

    asyncio.run(main())


def measure(
    url: str,
    base_url: str,
    calls: int,
    warmup: int,
    lease_calls: int = LEASE_CALLS,
    stream: bool = False,
) -> tuple[list[Any], ...]:
    key = generate_key()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-routing-"))  # its usage spool
    engine = make_engine(Settings(database_url=url, fernet_keys=(key,), data_dir=data_dir))
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
    engine.dispose()
    environ = {
        "AI_CONSOLE_DATABASE_URL": url,
        "AI_CONSOLE_FERNET_KEYS": key,
        "AI_CONSOLE_DATA_DIR": str(data_dir),
        # The fake provider listens on loopback, which the egress policy refuses unless allowed.
        "AI_CONSOLE_BASE_URL_ALLOWLIST": "127.0.0.1",
    }
    spawn = multiprocessing.get_context("spawn")
    pipes, processes = {}, []
    for kind in ("routed", "direct"):
        ours, theirs = spawn.Pipe()
        process = spawn.Process(
            target=caller, args=(kind, base_url, environ, lease_calls, stream, theirs)
        )
        process.start()
        pipes[kind] = ours
        processes.append(process)
    results: dict[str, list[Any]] = {"routed": [], "direct": []}
    try:
        for pipe in pipes.values():
            pipe.send(warmup)
            pipe.recv()
        for n in range(0, calls, BLOCK):
            order = ("routed", "direct") if n // BLOCK % 2 else ("direct", "routed")
            for kind in order:
                pipes[kind].send(min(BLOCK, calls - n))
                results[kind] += pipes[kind].recv()
    finally:
        for pipe in pipes.values():
            pipe.send(None)
        for process in processes:
            process.join(timeout=60)
    return results["routed"], results["direct"]


def report(name: str, routed: list[float], bare: list[float]) -> None:
    r50, b50 = percentile(routed, 50), percentile(bare, 50)
    r99, b99 = percentile(routed, 99), percentile(bare, 99)
    print(
        f"{name:<11} direct p50 {b50:6.2f} ms  p99 {b99:6.2f} ms | "
        f"routed p50 {r50:6.2f} ms  p99 {r99:6.2f} ms | "
        f"ratio p50 {r50 / b50:4.2f}  p99 {r99 / b99:4.2f}  "
        f"(+{r50 - b50:.2f} ms at p50, +{r99 - b99:.2f} ms at p99)"
    )


def report_stream(routed: list[tuple[float, float]], bare: list[tuple[float, float]]) -> None:
    for n, what in ((0, "first piece"), (1, "whole")):
        report(f"  {what}", [r[n] for r in routed], [b[n] for b in bare])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
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
        f"{args.calls} calls each, after {args.warmup} warm-up calls; routed and direct in "
        f"processes of their own; fake provider in its own, answering after "
        f"{PROVIDER_DELAY_S * 1000:g} ms; limits and usage logging on"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            report("SQLite", *measure(url, base_url, args.calls, args.warmup))
        pg = PostgresServer(args.pg)
        pg_url = pg.create()
        try:
            report("PostgreSQL", *measure(pg_url, base_url, args.calls, args.warmup))
        finally:
            pg.drop(pg_url)
        pg_url = pg.create()
        try:
            print("PG, streamed (an answer of 8 pieces)")
            report_stream(*measure(pg_url, base_url, args.calls, args.warmup, stream=True))
        finally:
            pg.drop(pg_url)
        pg_url = pg.create()
        try:
            report("PG, exact", *measure(pg_url, base_url, args.calls, args.warmup, lease_calls=1))
        finally:
            pg.drop(pg_url)
            pg.admin.dispose()
    finally:
        server.kill()


if __name__ == "__main__":
    main()
