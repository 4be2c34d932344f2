"""A limited config under concurrency, against an unlimited one: latency and overshoot.

    .venv/bin/python bench/limits.py [--processes 4] [--callers 25] [--calls 4000]
        [--limit 400000] [--max-output 1024] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

Several router processes, each with many concurrent callers, call the fake provider (its own
process) for two tasks: one served by a config without limits, one by a config with a daily
token limit. Each call holds about max-output + 110 tokens while it runs; the default limit is
below the 16 x 32 calls' worth a fixed 32-call lease needed, as a modest daily limit is for
calls of 1,024 output tokens. Prints each one's p50/p99 latency and the ratio
limited/unlimited (issue 13's target: p50 within 1.5x), then calls the limited config until
it refuses and checks that the tokens recorded against it never exceed the limit.
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

from sqlalchemy import func, select

from core.config import Settings
from core.crypto import SecretBox, generate_key
from core.db import make_engine, upgrade
from core.models import ProviderConfig, UsageLog
from core.routing import QuotaExceeded, Router
from tests.fakes import FakeProviderServer
from tests.support.database import PostgresServer

KEY = "sk-bench-0000000000000000"
PROMPT = "Extract the job title from: Senior Data Engineer (Python, SQL), Berlin, hybrid."


def serve(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with FakeProviderServer() as server:
        server.api_keys["openai"] = {KEY}
        queue.put(server.openai_base_url)
        time.sleep(3600)


def worker(
    settings: Settings, task: str, callers: int, calls: int, max_output: int, drain: bool
) -> list[float]:
    """`calls` calls for `task` from `callers` concurrent callers; the latencies in ms of those
    that were answered (or, with `drain`, calls until every caller has been refused)."""

    async def main() -> list[float]:
        router = Router(settings=settings, max_retries=0, environ={})
        latencies: list[float] = []
        refused: list[int] = []
        left = calls

        async def caller() -> None:
            nonlocal left
            while drain or left > 0:
                left -= 1
                started = time.perf_counter()
                try:
                    await router.generate(task, PROMPT, max_output_tokens=max_output)
                except QuotaExceeded:
                    if drain:
                        return
                    refused.append(1)
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        try:
            await asyncio.gather(*(caller() for _ in range(callers)))
        finally:
            await router.aclose()
        return latencies

    return asyncio.run(main())


def run(
    settings: Settings, task: str, args: argparse.Namespace, drain: bool = False
) -> list[float]:
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(args.processes) as pool:
        per_process = pool.starmap(
            worker,
            [(settings, task, args.callers, args.calls // args.processes, args.max_output, drain)]
            * args.processes,
        )
    return [latency for latencies in per_process for latency in latencies]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--callers", type=int, default=25)
    parser.add_argument("--calls", type=int, default=4000, help="per task, over all processes")
    parser.add_argument("--limit", type=int, default=400_000)
    parser.add_argument("--max-output", type=int, default=1024)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()  # type: ignore[type-arg]
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(queue,), daemon=True)
    server.start()
    base_url = queue.get(timeout=30)
    pg = PostgresServer(args.pg)
    url = pg.create()
    try:
        key = generate_key()
        settings = Settings(
            database_url=url,
            fernet_keys=(key,),
            base_url_allowlist=("127.0.0.1",),
            data_dir=Path(tempfile.mkdtemp(prefix="bench-limits-")),
        )
        engine = make_engine(settings)
        upgrade(engine)
        with engine.begin() as conn:
            for task, limit in (("extraction", None), ("cv_draft", args.limit)):
                conn.execute(
                    ProviderConfig.__table__.insert().values(
                        provider_type="openai",
                        model_name="gpt-4o-mini",
                        display_name=task,
                        api_key_encrypted=SecretBox([key]).encrypt(KEY),
                        key_last4=KEY[-4:],
                        base_url=base_url,
                        **{f"default_for_{task}": True},
                        daily_token_limit=limit,
                    )
                )
        print(
            f"{args.processes} processes x {args.callers} callers, {args.calls} calls per task, "
            f"PostgreSQL, daily limit {args.limit:,}"
        )
        results = {}
        for name, task in (("unlimited", "extraction"), ("limited", "cv_draft")):
            latencies = run(settings, task, args)
            results[name] = latencies
            print(
                f"{name:<10} p50 {percentile(latencies, 50):7.1f} ms  "
                f"p99 {percentile(latencies, 99):7.1f} ms  ({len(latencies)} calls answered of "
                f"{args.calls})"
            )
        ratio = percentile(results["limited"], 50) / percentile(results["unlimited"], 50)
        print(f"limited/unlimited at p50: {ratio:.2f}")
        run(settings, "cv_draft", args, drain=True)
        with engine.connect() as conn:
            recorded = conn.scalar(
                select(func.sum(UsageLog.total_tokens))
                .join(ProviderConfig)
                .where(ProviderConfig.display_name == "cv_draft", UsageLog.status == "success")
            )
        verdict = "no overshoot" if recorded <= args.limit else "OVERSHOOT"
        print(f"drained: {recorded:,} of {args.limit:,} tokens recorded ({verdict})")
        engine.dispose()
    finally:
        pg.drop(url)
        pg.admin.dispose()
        server.kill()


if __name__ == "__main__":
    main()
