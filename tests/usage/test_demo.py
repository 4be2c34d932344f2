"""`python -m core demo-data`: realistic demo usage that the rollups sum as it lands, priced
by genai-prices, marked as demo, and removed again (with its rollup share) by `--purge`."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from core.cli import main
from core.models import AdminActionLog, ProviderConfig, QuotaCounter, UsageLog, utcnow
from core.pricing import estimate_cost_usd, to_micro_usd
from tests.support.database import MigratedDatabase
from tests.support.usage import assert_rollups_match, raw_rows, rollup_contents


def demo(db: MigratedDatabase, *args: str) -> int:
    return main(["demo-data", *args], settings=db.settings)


def test_demo_data_looks_real_and_purge_removes_it(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.engine.begin() as conn:  # a real call, which the purge must leave alone
        conn.execute(
            insert(UsageLog),
            {"provider_type": "openai", "model_name": "gpt-4o-mini", "task_type": "extraction",
             "status": "success", "latency_ms": 812, "created_at": utcnow() - timedelta(hours=3)},
        )  # fmt: skip
    started = utcnow()
    assert demo(db, "--days", "10", "--calls", "3000", "--seed", "3") == 0
    assert "Added 3,000 demo usage rows" in capsys.readouterr().out

    rows = [r for r in raw_rows(db) if r["source"] == "demo"]
    assert len(rows) == 3000
    assert all(started - timedelta(days=10) <= r["created_at"] < utcnow() for r in rows)
    assert {r["status"] for r in rows} == {"success", "error", "timeout", "rejected"}
    assert {r["provider_type"] for r in rows} == {"openai", "claude", "gemini"}
    assert {r["task_type"] for r in rows} == {
        "extraction",
        "cv_draft",
        "cover_letter",
        "validation",
    }
    for r in rows:
        if r["status"] == "success":  # priced by genai-prices, to the micro-dollar (rounding)
            tokens = (r["provider_type"], r["model_name"], r["input_tokens"], r["output_tokens"])
            cached = r["cached_input_tokens"]
            price = estimate_cost_usd(*tokens, cached_input_tokens=cached)
            assert abs(r["cost_micro_usd"] - to_micro_usd(price)) <= 1
            if cached:  # a prompt cache hit: what it saved against the full price
                saved = to_micro_usd(estimate_cost_usd(*tokens)) - r["cost_micro_usd"]
                assert 0 < cached < r["input_tokens"]
                assert abs(r["cache_savings_micro_usd"] - saved) <= 1
            assert r["latency_ms"] > 0 and r["total_tokens"] > 0
        else:
            assert r["cost_micro_usd"] is None and r["total_tokens"] == 0
        if r["status"] == "timeout":
            assert r["latency_ms"] >= 60_000
    # Shaped like real answer times: seconds, not half a minute (a p95 of 30 s looked broken).
    measured = sorted(r["latency_ms"] for r in rows if r["status"] != "rejected")
    p95, p99 = (measured[int(q * (len(measured) - 1))] for q in (0.95, 0.99))
    assert 2_000 < p95 < 15_000 and p99 < 30_000
    cached = [r for r in rows if r["cached_input_tokens"]]
    assert 0.2 < len(cached) / len(rows) < 0.5  # some calls read a prompt cache, most not
    assert_rollups_match(db)

    with db.session() as session:
        configs = session.scalars(select(ProviderConfig)).all()
        assert len(configs) == 6 and not any(c.is_active for c in configs)
        assert not any(c.serves(task) for c in configs for task in ("extraction", "cv_draft"))
        assert {c.id for c in configs} == {r["provider_config_id"] for r in rows}
        # Made now, but "existing" since their first call: a forecast from their creation
        # would otherwise see weeks of calls in a minute ("daily limit reached about 08:33").
        first = min(r["created_at"] for r in rows if r["source"] == "demo")
        assert all(c.created_at <= first for c in configs)
        month = utcnow().date().replace(day=1)
        used: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for r in rows:
            if r["created_at"].date() >= month:
                used[r["provider_config_id"]][0] += r["total_tokens"]
                used[r["provider_config_id"]][1] += r["cost_micro_usd"] or 0
        counted = {
            config: [tokens, micro_usd]
            for config, tokens, micro_usd in session.execute(
                select(
                    QuotaCounter.config_id,
                    func.sum(QuotaCounter.used_tokens),
                    func.sum(QuotaCounter.used_micro_usd),
                ).group_by(QuotaCounter.config_id)
            ).all()
        }
        # Tokens and dollars alike, so a budget set on a demo config sees what it spent.
        assert {k: v for k, v in used.items() if v[0]} == counted
        assert sum(v[1] for v in counted.values()) > 0
        actions = session.scalars(select(AdminActionLog.action)).all()
        assert actions.count("provider.create") == 6 and "usage.demo_data" in actions

    assert demo(db, "--days", "2", "--calls", "500") == 0  # again: the same six configs
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ProviderConfig)) == 6
    assert len(raw_rows(db)) == 3501

    assert demo(db, "--purge") == 0
    assert "Removed 3,500 demo usage row(s) and 6 demo config(s)" in capsys.readouterr().out
    remaining = raw_rows(db)
    assert [r["source"] for r in remaining] == ["router"]
    assert_rollups_match(db)
    assert sum(v["calls"] for v in rollup_contents(db, hourly=False).values()) == 1
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ProviderConfig)) == 0
        assert session.scalar(select(func.count()).select_from(QuotaCounter)) == 0
        assert "usage.demo_purge" in session.scalars(select(AdminActionLog.action)).all()


@pytest.mark.parametrize("args", [["--days", "0"], ["--calls", "-5"], ["--days", "9999"]])
def test_bad_demo_arguments_are_one_clear_line(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert demo(db, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --days must be 1 to") and err.count("\n") == 1
    assert raw_rows(db) == []
