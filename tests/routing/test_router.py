"""core.routing against the fake provider server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from sqlalchemy import event, select, update

from core.cli import main as cli_main
from core.crypto import SecretBox, generate_key
from core.models import ProviderConfig, UsageLog
from core.pricing import to_micro_usd
from core.routing import (
    GenerationResult,
    NoProviderAvailable,
    ProviderCallError,
    QuotaExceeded,
    Router,
    UnknownTask,
    get_default_provider_config,
)
from tests.fakes import AttackerServer, FakeProviderServer, count_tokens, make_reply
from tests.fakes.leak_check import assert_clean
from tests.support.database import MigratedDatabase
from tests.support.routing import (
    FAKE_NAME,
    KEYS,
    add_config,
    make_router,
    run,
    usage_rows,
)

PROMPT = "Extract the job title from: Staff Engineer, Lisbon"


def generate(router: Router, task: str = "extraction", **kwargs: Any) -> GenerationResult:
    return run(router, lambda r: r.generate(task, kwargs.pop("prompt", PROMPT), **kwargs))


# --- choosing --------------------------------------------------------------------------------


def test_candidates_in_priority_order_then_the_default(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    late = add_config(db, fake, "openai", tasks=["extraction"], priority=10, display_name="late")
    early = add_config(db, fake, "claude", tasks=["extraction"], priority=5, display_name="early")
    fallback = add_config(db, fake, "gemini", is_default=True, display_name="default")
    add_config(
        db, fake, "openai", tasks=["extraction"], priority=1, is_active=False, display_name="off"
    )

    router = make_router(db)
    plan = router.explain("extraction")
    assert [(c.display_name, c.eligible) for c in plan.candidates] == [
        ("off", False),
        ("early", True),
        ("late", True),
        ("default", True),
    ]
    assert plan.candidates[0].reason == "inactive"
    assert plan.serving is not None and plan.serving.config_id == early

    result = generate(router, user_id=42)
    assert (result.config_id, result.provider_type) == (early, "claude")
    assert result.text == make_reply(PROMPT) and result.attempts == ()
    [row] = usage_rows(db)
    assert (row.provider_config_id, row.user_id, row.status, row.source) == (
        early,
        42,
        "success",
        "router",
    )
    assert row.total_tokens == result.total_tokens == count_tokens([PROMPT, make_reply(PROMPT)])
    assert late != fallback


def test_a_task_nobody_flags_goes_to_the_default(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    fallback = add_config(db, fake, "gemini", is_default=True)
    assert generate(make_router(db), "cover_letter").config_id == fallback
    with db.session() as session:
        assert get_default_provider_config(session, "cover_letter").id == fallback  # type: ignore[union-attr]


def test_legacy_environment_serves_when_no_config_is_stored(
    db: MigratedDatabase, fake: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)  # read by the SDK itself
    environ = {"OPENAI_API_KEY": KEYS["openai"], "OPENAI_MODEL": "gpt-4o-mini"}
    router = make_router(db, environ=environ)
    assert router.explain("validation").legacy
    result = generate(router, "validation")
    assert (result.provider_type, result.config_id) == ("openai", None)
    [row] = usage_rows(db)
    assert (row.source, row.provider_config_id, row.status) == ("legacy_env", None, "success")


def test_no_provider_at_all_says_what_to_do(db: MigratedDatabase) -> None:
    with pytest.raises(NoProviderAvailable, match="add one in the console's Providers page"):
        generate(make_router(db))


def test_only_inactive_configs_is_not_the_legacy_case(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, tasks=["extraction"], is_active=False)
    router = make_router(db, environ={"OPENAI_API_KEY": KEYS["openai"]})
    with pytest.raises(NoProviderAvailable, match="No active provider serves 'extraction'"):
        generate(router)


def test_unknown_task_is_refused(db: MigratedDatabase) -> None:
    with pytest.raises(UnknownTask, match="unknown task 'poetry': use one of extraction"):
        generate(make_router(db), "poetry")


# --- falling back ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [(500, "unavailable"), (401, "authentication")])
def test_a_failing_first_candidate_falls_back_and_both_are_logged(
    db: MigratedDatabase, fake: FakeProviderServer, status: int, kind: str
) -> None:
    first = add_config(db, fake, "openai", tasks=["extraction"], priority=1)
    second = add_config(db, fake, "claude", tasks=["extraction"], priority=2)
    fake.fail_next("openai", status, times=2)

    result = generate(make_router(db, max_retries=1))
    assert result.config_id == second
    [attempt] = result.attempts
    assert (attempt.config_id, attempt.status, attempt.error_type) == (first, "error", kind)
    if status == 500:  # the SDK retried it first
        assert len(fake.requests_for("openai")) == 2
    rows = usage_rows(db)
    assert [(r.provider_config_id, r.status, r.error_type) for r in rows] == [
        (first, "error", kind),
        (second, "success", None),
    ]
    assert rows[0].total_tokens == 0 and rows[0].error_message


def test_a_bad_request_is_raised_at_once(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    first = add_config(db, fake, "openai", tasks=["extraction"], priority=1)
    add_config(db, fake, "claude", tasks=["extraction"], priority=2)
    fake.fail_next("openai", 400)
    with pytest.raises(ProviderCallError) as caught:
        generate(make_router(db))
    assert caught.value.error is not None and caught.value.error.kind == "bad_request"
    assert fake.requests_for("anthropic") == []
    assert [(r.provider_config_id, r.status) for r in usage_rows(db)] == [(first, "error")]


def test_a_timeout_is_logged_as_timeout(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    fake.fail_next("openai", mode="slow", delay=3)
    with pytest.raises(ProviderCallError, match="Every provider for 'extraction' failed"):
        generate(make_router(db, timeout_s=0.3))
    [row] = usage_rows(db)
    assert (row.status, row.error_type) == ("timeout", "timeout")
    assert row.latency_ms >= 250  # it waited for the timeout, not for the answer (status says so)


@pytest.mark.parametrize("limit", [None, 100_000], ids=["unlimited", "limited"])
def test_a_cancelled_call_writes_one_cancelled_row_and_holds_nothing(
    db: MigratedDatabase, fake: FakeProviderServer, limit: int | None
) -> None:
    config = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=limit)
    fake.fail_next("openai", mode="slow", delay=60)

    async def cancel_once_sent(router: Router) -> None:
        call = asyncio.ensure_future(router.generate("extraction", PROMPT, user_id=5))
        while not fake.requests_for("openai"):  # the provider has the request: it is under way
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    router = make_router(db, lease_calls=1)
    run(router, cancel_once_sent)
    rows = usage_rows(db)
    assert [(r.provider_config_id, r.user_id, r.status, r.error_type) for r in rows] == [
        (config, 5, "cancelled", "cancelled")
    ]
    assert rows[0].total_tokens == 0 and rows[0].attempt_id
    standing = make_router(db)._ledger.standing(config, rows[0].created_at)
    assert (standing.day_used, standing.day_reserved) == (0, 0)


def test_the_key_never_reaches_usage_rows(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    fake.fail_next("openai", 401, message=f"Incorrect API key provided: {KEYS['openai']}")
    with pytest.raises(ProviderCallError) as caught:
        generate(make_router(db))
    [row] = usage_rows(db)
    assert KEYS["openai"] not in (row.error_message or "")
    assert "[redacted]" in (row.error_message or "")
    assert KEYS["openai"] not in str(caught.value)


def test_a_key_that_does_not_decrypt_is_skipped(
    db: MigratedDatabase, fake: FakeProviderServer, caplog: pytest.LogCaptureFixture
) -> None:
    broken = add_config(
        db,
        fake,
        "openai",
        tasks=["extraction"],
        priority=1,
        api_key_encrypted=SecretBox([generate_key()]).encrypt("sk-x-000000"),
    )
    good = add_config(db, fake, "claude", tasks=["extraction"], priority=2)
    router = make_router(db)
    assert router.explain("extraction").candidates[0].reason == (
        f"its key cannot be decrypted: this process lacks the key that encrypts config {broken}: "
        "restart it with AI_CONSOLE_FERNET_KEYS=new,old"
    )

    async def calls(r: Router) -> list[GenerationResult]:
        return [await r.generate("extraction", PROMPT) for _ in range(20)]

    results = run(router, calls)
    # Skipped like an inactive config: no attempt, no row per call, one warning.
    assert {(r.config_id, r.attempts) for r in results} == {(good, ())}
    assert {row.provider_config_id for row in usage_rows(db)} == {good}
    assert sum(f"encrypts config {broken}" in m for m in caplog.messages) == 1


def rotate_keys(db: MigratedDatabase, new: str) -> None:
    """`python -m core keys rotate` with `new` deployed first, then some later config change
    (rotation alone leaves the configs' fingerprint as it was)."""
    settings = dataclasses.replace(db.settings, fernet_keys=(new, *db.settings.fernet_keys))
    assert cli_main(["keys", "rotate"], settings=settings) == 0
    with db.session() as session:
        session.execute(update(ProviderConfig).values(description="rotated"))
        session.commit()


def test_a_router_without_the_new_key_keeps_serving_after_a_rotation(
    db: MigratedDatabase, fake: FakeProviderServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = add_config(db, fake, "openai", tasks=["extraction"])
    router = make_router(db)  # started with the old key only

    async def scenario(r: Router) -> list[GenerationResult]:
        first = await r.generate("extraction", PROMPT)
        rotate_keys(db, generate_key())
        return [first, *[await r.generate("extraction", PROMPT) for _ in range(20)]]

    results = run(router, scenario)
    assert {(r.config_id, r.attempts) for r in results} == {(config, ())}
    assert sum(f"encrypts config {config}" in m for m in caplog.messages) == 1
    [plan] = make_router(db).explain("extraction").candidates  # a process with the old key only
    assert not plan.eligible and "restart it with AI_CONSOLE_FERNET_KEYS=new,old" in plan.reason


def test_the_router_that_kept_an_old_key_says_so(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    config = add_config(db, fake, "openai", tasks=["extraction"])
    router = make_router(db)

    async def scenario(r: Router) -> str:
        await r.generate("extraction", PROMPT)
        rotate_keys(db, generate_key())
        [plan] = r.explain("extraction").candidates
        assert plan.eligible
        return plan.reason

    assert run(router, scenario) == (
        "serves this task with the key it decrypted before; warning: this process lacks the "
        f"key that encrypts config {config}: restart it with AI_CONSOLE_FERNET_KEYS=new,old"
    )


def test_a_new_process_with_only_the_old_key_writes_no_error_rows(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    config = add_config(db, fake, "openai", tasks=["extraction"])
    rotate_keys(db, generate_key())

    async def calls(r: Router) -> list[str]:
        refused = []
        for _ in range(50):
            with pytest.raises(NoProviderAvailable) as caught:
                await r.generate("extraction", PROMPT)
            refused.append(str(caught.value))
        return refused

    refused = run(make_router(db), calls)
    assert set(refused) == {
        "No provider for 'extraction' can be called by this process: this process lacks the "
        f"key that encrypts config {config}: restart it with AI_CONSOLE_FERNET_KEYS=new,old"
    }
    assert usage_rows(db) == []


# --- limits ----------------------------------------------------------------------------------


def test_a_call_beyond_the_limit_is_refused_or_falls_back(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    small = add_config(db, fake, "openai", tasks=["extraction"], priority=1, daily_token_limit=100)
    with pytest.raises(QuotaExceeded, match="at its token limit"):
        generate(make_router(db), max_output_tokens=200)
    assert [(r.provider_config_id, r.status, r.error_type) for r in usage_rows(db)] == [
        (small, "rejected", "quota")
    ]
    spare = add_config(db, fake, "claude", tasks=["extraction"], priority=2)
    assert generate(make_router(db), max_output_tokens=200).config_id == spare


def test_settled_usage_counts_against_the_limit(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    config = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=10_000)
    router = make_router(db)
    generate(router, max_output_tokens=100)
    router = make_router(db)
    plan = router.explain("extraction").candidates[0]
    assert plan.eligible
    used = usage_rows(db)[0].total_tokens
    standing = router._ledger.standing(config, usage_rows(db)[0].created_at)
    assert (standing.day_used, standing.day_reserved) == (used, 0)
    with db.session() as session:
        session.execute(update(ProviderConfig).values(daily_token_limit=used))
        session.commit()
    reason = router.explain("extraction").candidates[0].reason
    assert (
        reason
        == f"daily limit reached: {used:,} used + 0 reserved by running calls of {used:,} tokens"
    )
    asyncio.run(router.aclose())


# --- cost ------------------------------------------------------------------------------------


def test_cost_of_a_known_model_is_genai_prices_figure(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    result = generate(make_router(db))
    expected = calc_price(
        Usage(input_tokens=result.input_tokens, output_tokens=result.output_tokens),
        model_ref="gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert result.cost_usd == Decimal(expected) and result.cost_usd > 0
    assert usage_rows(db)[0].cost_micro_usd == to_micro_usd(Decimal(expected))


def test_cost_of_an_unknown_model_is_null_not_zero(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    fake.models["openai"] = [*fake.models["openai"], "in-house-llm-7"]
    add_config(db, fake, "openai", tasks=["extraction"], model_name="in-house-llm-7")
    result = generate(make_router(db))
    assert result.cost_usd is None
    assert usage_rows(db)[0].cost_micro_usd is None


# --- live configuration ----------------------------------------------------------------------


def test_a_config_edit_reaches_a_running_router(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    first = add_config(db, fake, "openai", tasks=["extraction"], priority=1)
    second = add_config(db, fake, "claude", tasks=["extraction"], priority=2)

    async def scenario(router: Router) -> list[int | None]:
        served = [(await router.generate("extraction", PROMPT)).config_id]
        with db.session() as session:  # what the console does when an admin deactivates it
            session.get(ProviderConfig, first).is_active = False  # type: ignore[union-attr]
            session.commit()
        served.append((await router.generate("extraction", PROMPT)).config_id)
        return served

    assert run(make_router(db, config_refresh_s=0), scenario) == [first, second]


def test_calls_do_not_read_configs_from_the_database(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    async def five_calls(router: Router) -> None:
        for _ in range(5):
            await router.generate("extraction", PROMPT)

    run(make_router(db, config_refresh_s=60), five_calls)
    fingerprints = [s for s in statements if "count(ai_provider_configs.id)" in s]
    loads = [s for s in statements if "ai_provider_configs.api_key_encrypted" in s]
    assert (len(fingerprints), len(loads)) == (1, 1)  # for all five calls


def test_generate_sync_for_synchronous_callers(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    config = add_config(db, fake, "gemini", tasks=["cv_draft"])
    router = make_router(db)
    try:
        result = router.generate_sync("cv_draft", "Draft a CV summary", user_id=7)
    finally:
        router.close()
    assert result.config_id == config and result.text == make_reply("Draft a CV summary")
    assert usage_rows(db)[0].user_id == 7


def test_images_are_routed_too(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    add_config(db, fake, "claude", tasks=["validation"])
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    result = run(
        make_router(db),
        lambda r: r.generate_with_image("validation", "Is this a clear photo?", png, "image/png"),
    )
    assert result.provider_type == "claude" and result.input_tokens > 85
    body = fake.last_request("anthropic").body
    assert body["messages"][0]["content"][0]["type"] == "image"


def test_explain_warns_about_a_failed_credential_test(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"], last_test_success=False)
    router = make_router(db)
    [plan] = router.explain("extraction").candidates
    asyncio.run(router.aclose())
    assert plan.eligible and "warning: its last credential test failed" in plan.reason
    with db.session() as session:
        assert session.scalars(select(UsageLog)).all() == []


def test_every_attempt_updates_the_prometheus_metrics(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    from prometheus_client import REGISTRY, generate_latest

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    add_config(db, fake, "openai", tasks=["extraction"], priority=1)
    add_config(db, fake, "claude", tasks=["extraction"], priority=2)
    fake.fail_next("openai", 500)
    before = {
        "ok": sample(
            "ai_provider_requests_total",
            provider_type="claude",
            task_type="extraction",
            status="success",
        ),
        "error": sample(
            "ai_provider_requests_total",
            provider_type="openai",
            task_type="extraction",
            status="error",
        ),
        "tokens": sample("ai_provider_tokens_used_total", provider_type="claude"),
        "cost": sample("ai_provider_cost_usd_total", provider_type="claude"),
        "latency": sample("ai_provider_latency_ms_count", provider_type="claude"),
    }
    result = generate(make_router(db))
    assert (
        sample(
            "ai_provider_requests_total",
            provider_type="claude",
            task_type="extraction",
            status="success",
        )
        == before["ok"] + 1
    )
    assert (
        sample(
            "ai_provider_requests_total",
            provider_type="openai",
            task_type="extraction",
            status="error",
        )
        == before["error"] + 1
    )
    assert sample("ai_provider_tokens_used_total", provider_type="claude") == (
        before["tokens"] + result.total_tokens
    )
    # Cost is counted as the row is stored, at the row's micro-dollar figure.
    with db.session() as session:
        stored = session.scalars(
            select(UsageLog.cost_micro_usd).where(UsageLog.status == "success")
        ).one()
    assert result.cost_usd and stored == round(result.cost_usd * 1_000_000)
    assert sample("ai_provider_cost_usd_total", provider_type="claude") == pytest.approx(
        before["cost"] + stored / 1_000_000
    )
    assert sample("ai_provider_latency_ms_count", provider_type="claude") == before["latency"] + 1
    assert b"ai_provider_latency_ms_bucket" in generate_latest(REGISTRY)


def test_usage_counts_before_a_limit_is_set(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    """A limit set mid-day already sees what the config used while it was unlimited."""
    config = add_config(db, fake, "openai", tasks=["extraction"])
    used = generate(make_router(db)).total_tokens
    with db.session() as session:
        session.execute(update(ProviderConfig).values(daily_token_limit=used + 10))
        session.commit()
    router = make_router(db)
    [plan] = router.explain("extraction").candidates
    assert plan.eligible  # 10 tokens left: not "reached", but too few for a call
    with pytest.raises(QuotaExceeded):
        generate(router)
    assert [r.status for r in usage_rows(db)] == ["success", "rejected"]
    assert usage_rows(db)[1].provider_config_id == config


def test_a_config_deleted_before_its_usage_is_written_does_not_lose_the_row(
    db: MigratedDatabase,
) -> None:
    from core.quota.ledger import QuotaLedger
    from core.usage.writer import UsageRecord, UsageWriter

    writer = UsageWriter(db.engine, QuotaLedger(db.engine), db.settings.usage_spool_dir)
    writer.submit(
        UsageRecord(
            provider_config_id=999,
            user_id=None,
            provider_type="openai",
            model_name="gpt-4o-mini",
            task_type="extraction",
            status="success",
            total_tokens=12,
        )
    )
    writer.close()
    [row] = usage_rows(db)
    assert (row.provider_config_id, row.total_tokens) == (None, 12)


def test_the_console_can_explain_a_task_without_a_router(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    from core.routing import explain

    served = add_config(db, fake, "claude", tasks=["validation"], daily_token_limit=50_000)
    plan = explain("validation", db.engine, SecretBox(db.settings.fernet_keys), environ={})
    assert plan.serving is not None and plan.serving.config_id == served
    assert str(plan).startswith("validation:\n  1. ok claude config (claude")


# --- egress: redirects, error bodies, clean errors -------------------------------------------

REDIRECTING = ["openai", "claude", "gemini"]
OTHER = {"openai": "claude", "claude": "gemini", "gemini": "openai"}


@pytest.mark.parametrize("provider_type", REDIRECTING)
def test_a_redirect_is_not_followed_and_the_next_provider_serves(
    db: MigratedDatabase, fake: FakeProviderServer, attacker: AttackerServer, provider_type: str
) -> None:
    first = add_config(db, fake, provider_type, tasks=["extraction"], priority=1)
    second = add_config(db, fake, OTHER[provider_type], tasks=["extraction"], priority=2)
    fake.fail_next(FAKE_NAME[provider_type], 302, location=f"{attacker.url}/v1/steal")

    result = generate(make_router(db))
    assert result.config_id == second
    [attempt] = result.attempts
    assert (attempt.config_id, attempt.error_type) == (first, "redirect")
    assert attempt.error_message is not None
    assert attempt.error_message.startswith("the endpoint redirected (to 127.0.0.1)")
    assert attacker.requests == []
    assert usage_rows(db)[0].error_message == attempt.error_message


@pytest.mark.parametrize("provider_type", REDIRECTING)
def test_a_redirect_names_the_status_when_nobody_else_serves(
    db: MigratedDatabase, fake: FakeProviderServer, attacker: AttackerServer, provider_type: str
) -> None:
    add_config(db, fake, provider_type, tasks=["extraction"])
    fake.fail_next(FAKE_NAME[provider_type], 302, location=f"{attacker.url}/v1/steal")
    with pytest.raises(ProviderCallError) as caught:
        generate(make_router(db))
    assert caught.value.error is not None and caught.value.error.status == 302
    assert f"{provider_type} answered 302: the endpoint redirected" in str(caught.value.error)
    assert attacker.requests == []
    assert_clean(caught.value, [KEYS[provider_type]])


def test_an_error_page_is_not_stored(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    key = KEYS["openai"]
    add_config(db, fake, "openai", tasks=["extraction"])
    fake.fail_next("openai", 404, body=f"# Gone\n[click](http://evil.example) {key} {key[3:13]}")
    with pytest.raises(ProviderCallError) as caught:
        generate(make_router(db))
    [row] = usage_rows(db)
    assert row.error_message == "HTTP 404 (the body was not JSON)"
    assert "evil.example" not in str(caught.value) and key[3:13] not in str(caught.value)


def test_a_long_error_message_is_stored_cut(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    add_config(db, fake, "claude", tasks=["extraction"])
    fake.fail_next("anthropic", 400, message="x" * 1000)
    with pytest.raises(ProviderCallError):
        generate(make_router(db))
    [row] = usage_rows(db)
    assert row.error_message is not None and 150 <= len(row.error_message) <= 200
    assert row.error_message.endswith("…")


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 401, "message": "Incorrect API key provided: {key}"},
        {"status": 400, "message": "bad request for {key}"},  # raised at once
        {"status": 503},
        {"mode": "disconnect"},
        {"status": 307, "location": "http://127.0.0.1:9/"},
    ],
    ids=["401", "400", "503", "disconnect", "307"],
)
@pytest.mark.parametrize("provider_type", REDIRECTING)
def test_routing_errors_carry_no_sdk_exception_and_no_key(
    db: MigratedDatabase, fake: FakeProviderServer, provider_type: str, fault: dict[str, Any]
) -> None:
    key = KEYS[provider_type]
    add_config(db, fake, provider_type, tasks=["extraction"])
    options = {k: v.format(key=key) if isinstance(v, str) else v for k, v in fault.items()}
    fake.fail_next(FAKE_NAME[provider_type], **options)
    with pytest.raises(ProviderCallError) as caught:
        generate(make_router(db))
    assert caught.value.error is not None
    assert_clean(caught.value, [key])
    assert all(key not in (a.error_message or "") for a in caught.value.attempts)


def test_the_router_refuses_what_its_settings_do_not_allow(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    settings = replace(db.settings, base_url_allowlist=())
    with pytest.raises(ProviderCallError) as caught:
        generate(make_router(db, settings=settings))
    assert caught.value.error is not None and caught.value.error.kind == "egress_refused"
    assert "refused by policy" in str(caught.value)
    assert fake.requests == []
    assert usage_rows(db)[0].error_type == "egress_refused"
