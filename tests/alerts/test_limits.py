"""Limit alerts on SQLite and PostgreSQL: a local webhook listener receives exactly one alert per
threshold crossed per period, with config, kind, period, threshold, used and limit in the body,
however often and by however many watchers the check runs."""

from __future__ import annotations

import threading
from datetime import timedelta

from core.access import Actor
from core.alerts import AlertWatcher, Outbox
from core.db import make_session_factory
from tests.alerts.conftest import NOW, audit, bodies, rule, spend, watcher
from tests.fakes.attacker_server import AttackerServer
from tests.support.database import MigratedDatabase


def test_each_threshold_crossed_is_sent_once_per_period(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule(db, boss, outbox, channel="webhook", target=f"{listener.url}/hooks/spend")
    clock = [NOW]
    watch = watcher(db, outbox, clock)
    seen = []
    for used in (500_000, 790_000, 812_345, 900_000, 960_000, 960_000, 1_000_000, 1_000_000):
        spend(db, budgeted, NOW.date(), micro_usd=used)
        watch.run_once()
        seen.append(len(listener.requests))
    assert seen == [0, 0, 1, 1, 2, 2, 3, 3]

    first, second, third = bodies(listener)
    assert [r.path for r in listener.requests] == ["/hooks/spend"] * 3
    assert first["config"] == {
        "id": budgeted,
        "name": "Billing GPT",
        "provider": "openai",
        "model": first["config"]["model"],
    }
    assert {k: first[k] for k in ("kind", "period", "period_start", "threshold_percent")} == {
        "kind": "usd_day",
        "period": "day",
        "period_start": "2026-12-07",
        "threshold_percent": 80,
    }
    assert (first["used"], first["limit"], first["unit"]) == (0.812345, 1.0, "USD")
    assert "81% of its daily budget" in first["text"]
    assert (second["threshold_percent"], second["used"]) == (95, 0.96)
    assert third["threshold_percent"] == 100 and "used up its daily budget" in third["text"]

    # A new day is a new period: its 80% is sent again.
    clock[0] = NOW + timedelta(days=1)
    spend(db, budgeted, clock[0].date(), micro_usd=850_000)
    watch.run_once()
    assert [(b["period_start"], b["threshold_percent"]) for b in bodies(listener)][3:] == [
        ("2026-12-08", 80)
    ]
    sent = audit(db, "alert.sent")
    assert len(sent) == 4
    assert sent[0].actor_label == "alerts" and sent[0].details["target"].endswith("/…pend")


def test_a_jump_past_several_thresholds_sends_one_alert_and_monthly_tokens_count_the_month(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule(db, boss, outbox, channel="webhook", target=listener.url, limit_kinds=["tokens_month"])
    # 600,000 tokens earlier this month and 360,000 today: 96% of the monthly 1,000,000.
    spend(db, budgeted, NOW.date() - timedelta(days=3), tokens=600_000)
    spend(db, budgeted, NOW.date(), tokens=360_000, micro_usd=990_000)
    watcher(db, outbox, [NOW]).run_once()
    # One message for the highest threshold passed, saying it passed the lower one too (two
    # at once would be noise); the daily budget (99%) is not watched by this rule.
    (body,) = bodies(listener)
    assert (body["kind"], body["period_start"], body["threshold_percent"]) == (
        "tokens_month",
        "2026-12",
        95,
    )
    assert body["also_crossed"] == [80] and "It passed 80% since the last check too" in body["text"]
    assert (body["used"], body["unit"]) == (960_000, "tokens")
    # The 80% is claimed, never sent later; the 100% still comes when it is reached.
    spend(db, budgeted, NOW.date(), tokens=400_000)
    watcher(db, outbox, [NOW]).run_once()
    watcher(db, outbox, [NOW]).run_once()
    assert [b["threshold_percent"] for b in bodies(listener)] == [95, 100]


def test_watchers_running_at_once_send_each_alert_once(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule(db, boss, outbox, channel="webhook", target=listener.url)
    spend(db, budgeted, NOW.date(), micro_usd=1_000_000)
    watchers = [
        AlertWatcher(make_session_factory(db.engine), outbox, clock=lambda: NOW) for _ in range(4)
    ]
    start = threading.Barrier(len(watchers))
    errors: list[BaseException] = []

    def run(w: AlertWatcher) -> None:
        start.wait()
        try:
            for _ in range(3):
                w.run_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in watchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    (body,) = bodies(listener)
    assert (body["threshold_percent"], body["also_crossed"]) == (100, [80, 95])


def test_a_rule_for_one_config_is_silent_about_the_others(
    db: MigratedDatabase,
    boss: Actor,
    outbox: Outbox,
    listener: AttackerServer,
    budgeted: int,
    fake_providers,  # type: ignore[no-untyped-def]
) -> None:
    from tests.support.routing import add_config

    other = add_config(db, fake_providers, daily_budget_micro_usd=1_000_000)
    rule(db, boss, outbox, channel="webhook", target=listener.url, config_id=other)
    spend(db, budgeted, NOW.date(), micro_usd=1_000_000)
    watcher(db, outbox, [NOW]).run_once()
    assert listener.requests == []
    spend(db, other, NOW.date(), micro_usd=800_000)
    watcher(db, outbox, [NOW]).run_once()
    assert [(b["config"]["id"], b["threshold_percent"]) for b in bodies(listener)] == [(other, 80)]
