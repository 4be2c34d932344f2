"""The Providers page in AppTest: status at a glance, routing now, Test/Activate/Delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import ui
from core.models import AdminActionLog, ProviderConfig, QuotaCounter, utcnow
from core.quota.ledger import QuotaLedger
from tests.fakes import FakeProviderServer
from tests.support.pages import Console, dialogs, error_under, state_dump, texts
from tests.support.quota import reserve_now
from tests.support.routing import KEYS, add_config, allow_planted_keys

PAGE = "pages/providers.py"


def button(at: AppTest, key: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.key == key)


def markdown(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def shown(value: str) -> str:
    """What a reader sees of a Markdown string the page escaped with ui.plain."""
    return re.sub(r"\\(.)", r"\1", value).replace("  \n", "\n").replace("\u2060", "")


def errors(at: AppTest) -> list[str]:
    return [shown(e.value) for e in at.error]


def test_an_analyst_is_refused(console: Console) -> None:
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page(PAGE, analyst).run()
    assert at.error[0].value == "Not allowed: this needs the super-admin role."
    assert not at.subheader


def test_the_empty_state_says_what_to_do_first(console: Console) -> None:
    admin, _ = console.add_user("ada")
    at = console.page(PAGE, admin).run()
    assert not at.exception
    assert "No provider is configured yet" in at.info[0].value
    assert "python -m core seed-from-env" in at.info[0].value
    assert sum("Nobody: calls fail" in e.value for e in at.error) == 4


def test_cards_show_status_badges_limits_and_only_the_last_four(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    add_config(
        console.db,
        fake_providers,
        "gemini",
        display_name="Gemini Fast",
        tasks=["extraction", "validation"],
        daily_token_limit=1_000_000,
        is_default=True,
        last_test_success=True,
        last_tested_at=utcnow(),
    )
    add_config(
        console.db,
        fake_providers,
        "claude",
        display_name="Claude Backup",
        tasks=["extraction"],
        priority=200,
        is_active=False,
    )
    at = console.page(PAGE, admin).run()
    assert not at.exception
    text = markdown(at)
    assert ":blue-badge[Gemini]" in text and ":orange-badge[Claude]" in text
    assert ":green-badge[Active]" in text and ":red-badge[Inactive]" in text
    assert ":violet-badge[Default]" in text
    assert any("key …89ab" in c.value for c in at.caption)
    assert any(p.proto.text.startswith("Today: 0 of 1,000,000 tokens") for p in at.get("progress"))
    assert any("Test passed just now" in c.value for c in at.caption)
    # Routing now: Gemini serves extraction; the inactive Claude is skipped, with the reason.
    assert "Gemini Fast" in text
    assert any("skipped: Claude Backup (inactive)" in c.value for c in at.caption)
    for key in KEYS.values():
        assert key not in texts(at) and key not in state_dump(at)


def test_a_card_counts_reserved_tokens_against_the_limit_and_says_so(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(console.db, fake_providers, "openai", daily_token_limit=10_000)
    now = utcnow()  # a router holds 2,500 tokens: a call in progress, or a lease
    assert reserve_now(
        QuotaLedger(console.db.engine), config, 2_500, 10_000, None, now, timedelta(minutes=5)
    )
    at = console.page(PAGE, admin).run()
    assert not at.exception
    (today,) = [p for p in at.get("progress") if p.proto.text.startswith("Today")]
    assert today.proto.text == "Today: 0 of 10,000 tokens (25%); 2,500 reserved by running calls"
    assert today.proto.value == 25


def test_test_checks_the_stored_key_and_records_the_result(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(console.db, fake_providers, "openai", tasks=["extraction"])
    at = console.page(PAGE, admin).run()
    button(at, f"test-{config}").click().run()
    assert shown(at.success[0].value).startswith("Key accepted; model gpt-4o-mini is available.")
    with console.db.session() as session:
        row = session.get(ProviderConfig, config)
        assert row is not None and row.last_test_success is True

    fake_providers.fail_next("openai", 401)
    button(at, f"test-{config}").click().run()
    assert any(e.startswith("The key was refused") for e in errors(at))
    # The card's status line follows the test just run, not the one before it.
    captions = [c.value for c in at.caption]
    assert "Test FAILED just now" in captions and "Test passed just now" not in captions


def test_deactivate_needs_a_fresh_code_then_applies(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(console.db, fake_providers, "openai", tasks=["extraction"])
    stale = {ui.MFA_VERIFIED_AT: utcnow() - timedelta(minutes=11)}
    at = console.page(PAGE, admin, **stale).run()
    button(at, f"toggle-{config}").click().run()
    button(at, "deactivate-confirm").click().run()
    assert dialogs(at), "the step-up dialog should open"
    with console.db.session() as session:
        assert session.get(ProviderConfig, config).is_active  # type: ignore[union-attr]

    at = console.page(PAGE, admin).run()
    button(at, f"toggle-{config}").click().run()
    button(at, "deactivate-confirm").click().run()
    with console.db.session() as session:
        assert not session.get(ProviderConfig, config).is_active  # type: ignore[union-attr]
        actions = session.scalars(select(AdminActionLog.action)).all()
    assert "provider.deactivate" in actions


def test_deactivating_the_only_provider_of_a_task_warns_as_delete_does(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    only = add_config(console.db, fake_providers, "openai", display_name="Only", tasks=["cv_draft"])
    at = console.page(PAGE, admin).run()
    button(at, f"toggle-{only}").click().run()
    assert dialogs(at)
    assert any("No other active provider serves CV draft" in w.value for w in at.warning)
    button(at, "deactivate-cancel").click().run()
    with console.db.session() as session:
        assert session.get(ProviderConfig, only).is_active  # type: ignore[union-attr]
    assert not dialogs(at)
    button(at, f"toggle-{only}").click().run()
    button(at, "deactivate-confirm").click().run()
    with console.db.session() as session:
        assert not session.get(ProviderConfig, only).is_active  # type: ignore[union-attr]
    assert not dialogs(at)


def test_activating_needs_no_confirmation(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(console.db, fake_providers, "openai", tasks=["extraction"], is_active=False)
    at = console.page(PAGE, admin).run()
    button(at, f"toggle-{config}").click().run()
    with console.db.session() as session:
        assert session.get(ProviderConfig, config).is_active  # type: ignore[union-attr]


def test_delete_confirms_and_warns_about_unserved_tasks(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(
        console.db, fake_providers, "openai", display_name="Only One", tasks=["cover_letter"]
    )
    at = console.page(PAGE, admin).run()
    button(at, f"delete-{config}").click().run()
    assert dialogs(at)
    assert any("No other active provider serves Cover letter" in w.value for w in at.warning)
    with console.db.session() as session:
        assert session.get(ProviderConfig, config) is not None  # nothing happens before confirm
    button(at, "delete-confirm").click().run()
    with console.db.session() as session:
        assert session.get(ProviderConfig, config) is None
        assert "provider.delete" in session.scalars(select(AdminActionLog.action)).all()


def fill_form(at: AppTest, **values: object) -> None:
    for label, value in values.items():
        widget = next(w for w in (*at.text_input, *at.number_input) if w.label == label)
        widget.set_value(value)


def test_add_a_provider_the_seed_way(console: Console, fake_providers: FakeProviderServer) -> None:
    """The walk-through: Gemini, paste the key, gemini-2.5-flash, a name, two tasks, a limit."""
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    at = console.page(PAGE, admin).run()
    next(b for b in at.button if b.label == "Add provider").click().run()
    at.selectbox(key="pf_type").set_value("gemini").run()
    fill_form(
        at,
        **{
            "API key": KEYS["gemini"],
            "Display name": "Gemini Fast (Budget)",
            "Daily token limit": "1000000",
        },
    )
    at.checkbox(key="pf_task_extraction").check()
    at.checkbox(key="pf_task_validation").check()
    with_base = next(w for w in at.text_input if w.label == "Base URL")
    with_base.set_value(fake_providers.gemini_base_url)
    at.button(key="FormSubmitter:provider_form-Create provider").click().run()
    assert not at.exception
    with console.db.session() as session:
        row = session.scalars(select(ProviderConfig)).one()
    assert (row.provider_type, row.model_name, row.display_name) == (
        "gemini",
        "gemini-2.5-flash",
        "Gemini Fast (Budget)",
    )
    assert (
        row.default_for_extraction and row.default_for_validation and not row.default_for_cv_draft
    )
    assert row.daily_token_limit == 1_000_000 and row.last_test_success
    assert [shown(t.value) for t in at.toast] == [
        "Saved Gemini Fast (Budget): Gemini accepted the key."
    ]
    assert KEYS["gemini"] not in state_dump(at) and KEYS["gemini"] not in texts(at)


def test_bad_fields_are_named_and_bad_keys_save_nothing(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    at = console.page(PAGE, admin, **{"providers_form": "new"}).run()
    fill_form(
        at,
        **{
            "API key": "sk-proj-WRONGkey00000000",
            "Display name": "",
            "Daily token limit": "-5",
            "Base URL": fake_providers.openai_base_url,
        },
    )
    at.button(key="FormSubmitter:provider_form-Create provider").click().run()
    # Each beside its field, not in a list under the buttons.
    assert error_under(at, "Display name") == "Display name: must not be empty."
    assert error_under(at, "Daily token limit") == "Daily token limit: must not be negative."
    assert error_under(at, "Monthly token limit") is None
    fill_form(at, **{"Display name": "Wrong key", "Daily token limit": ""})
    at.button(key="FormSubmitter:provider_form-Create provider").click().run()
    # Fixed, so gone at the next submit; the provider's refusal is about no single field.
    assert error_under(at, "Display name") is None
    assert error_under(at, "Daily token limit") is None
    assert any(e.startswith("Not saved: The key was refused") for e in errors(at))
    with console.db.session() as session:
        assert session.scalars(select(ProviderConfig)).all() == []


def test_edit_without_a_key_keeps_it_and_a_stale_edit_is_refused(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(
        console.db, fake_providers, "openai", display_name="Mini", tasks=["extraction"]
    )
    with console.db.session() as session:
        stored_key = session.get(ProviderConfig, config).api_key_encrypted  # type: ignore[union-attr]
    at = console.page(PAGE, admin).run()
    button(at, f"edit-{config}").click().run()
    fill_form(at, **{"Daily token limit": "5000"})
    requests = len(fake_providers.requests)
    at.button(key="FormSubmitter:provider_form-Save changes").click().run()
    with console.db.session() as session:
        row = session.get(ProviderConfig, config)
        assert row is not None and row.daily_token_limit == 5000
        assert row.api_key_encrypted == stored_key
    # No key or model changed, so nothing was checked, and the toast does not say it was.
    assert len(fake_providers.requests) == requests
    assert [shown(t.value) for t in at.toast] == ["Saved Mini."]

    button(at, f"edit-{config}").click().run()  # opened at version 2...
    with console.db.session() as session:  # ...someone else saves meanwhile
        session.get(ProviderConfig, config).priority = 1  # type: ignore[union-attr]
        session.commit()
    fill_form(at, **{"Daily token limit": "9000"})
    at.button(key="FormSubmitter:provider_form-Save changes").click().run()
    assert any("was changed by someone else" in e for e in errors(at))
    with console.db.session() as session:
        assert session.get(ProviderConfig, config).daily_token_limit == 5000  # type: ignore[union-attr]


def test_a_pasted_key_is_only_kept_sealed_in_session_state(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    """Not after a refused save, not while the step-up dialog waits: only a Fernet-sealed copy."""
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    stale = {ui.MFA_VERIFIED_AT: utcnow() - timedelta(minutes=11), "providers_form": "new"}
    at = console.page(PAGE, admin, **stale).run()
    fill_form(at, **{"API key": KEYS["openai"], "Display name": ""})
    at.button(key="FormSubmitter:provider_form-Create provider").click().run()
    assert "Display name: must not be empty." in errors(at)
    assert KEYS["openai"] not in state_dump(at) and KEYS["openai"] not in texts(at)
    assert any("The key ending …6789 you pasted is kept" in shown(c.value) for c in at.caption)

    fill_form(
        at,
        **{"Display name": "Mini", "Base URL": fake_providers.openai_base_url},
    )
    at.button(key="FormSubmitter:provider_form-Create provider").click().run()
    assert dialogs(at), "the step-up dialog should be waiting for a code"
    assert KEYS["openai"] not in state_dump(at) and KEYS["openai"] not in texts(at)
    with console.db.session() as session:
        assert session.scalars(select(ProviderConfig)).all() == []


def test_a_form_edit_moving_the_key_elsewhere_is_refused_and_sends_nothing(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(console.db, fake_providers, "openai", tasks=["extraction"])
    with FakeProviderServer() as elsewhere:
        at = console.page(PAGE, admin).run()
        button(at, f"edit-{config}").click().run()
        fill_form(at, **{"Base URL": elsewhere.openai_base_url})
        at.button(key="FormSubmitter:provider_form-Save changes").click().run()
        refusal = "API key: paste the API key again to change the base URL"
        assert any(e.startswith(refusal) for e in errors(at))
        assert elsewhere.requests == [] and fake_providers.requests == []
    with console.db.session() as session:
        assert session.get(ProviderConfig, config).base_url == fake_providers.openai_base_url  # type: ignore[union-attr]


def test_provider_answers_are_shown_as_plain_text_not_markdown(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(console.db, fake_providers, "openai", tasks=["extraction"])
    planted = f"Go to [the fix](http://evil.example/?k={KEYS['openai']}) or **call** :red[us]"
    fake_providers.fail_next("openai", 401, message=planted)
    at = console.page(PAGE, admin).run()
    button(at, f"test-{config}").click().run()
    (error,) = [e for e in at.error if "refused" in e.value]
    # Every Markdown mark is escaped: no link, no bold, no coloured directive is drawn.
    assert "[the fix]" not in error.value and "**call**" not in error.value
    assert "\\[the fix\\]\\(http\\:" in error.value and "\\*\\*call\\*\\*" in error.value
    assert KEYS["openai"] not in error.value
    at = console.page(PAGE, admin).run()  # the stored last_test_message, on the card
    assert not any("[the fix](" in c.value for c in at.caption)
    assert any("\\[the fix\\]" in c.value for c in at.caption)


def page_order(at: AppTest) -> list[str]:
    """Every heading and Markdown text of the page, top to bottom."""

    def walk(node: Any, out: list[str]) -> list[str]:
        for child in getattr(node, "children", {}).values():
            if getattr(child, "type", "") in ("markdown", "subheader", "title"):
                out.append(str(child.value))
            walk(child, out)
        return out

    return walk(at.main, [])


def test_edit_opens_in_the_card_clicked_not_above_the_cards(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    ids = [
        add_config(console.db, fake_providers, "openai", display_name=name, tasks=["extraction"])
        for name in ("First", "Second", "Third")
    ]
    at = console.page(PAGE, admin).run()
    button(at, f"edit-{ids[1]}").click().run()
    order = page_order(at)
    assert order.index("#### Second") < order.index("Edit Second") < order.index("#### Third")
    assert not any(b.label == "Add provider" for b in at.button)  # one form at a time
    at.button(key="pf_cancel").click().run()
    assert "Edit Second" not in page_order(at)
    assert any(b.label == "Add provider" for b in at.button)


def test_a_dollar_budget_is_set_in_the_form_and_its_card_shows_spend_and_forecast(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    """The walk-through of issue 15: a $1 daily budget (and $3 a month) on a config, then its
    card: dollars spent against each, and when each is reached at the last 7 days' rate."""
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    now = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
    config = add_config(
        console.db,
        fake_providers,
        "openai",
        display_name="Mini",
        tasks=["extraction"],
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
    )
    with console.db.session() as session:  # $0.10 a day for a week, $0.30 so far today
        for days_ago in range(1, 8):
            day = (now - timedelta(days=days_ago)).date()
            session.add(QuotaCounter(config_id=config, day=day, used_micro_usd=100_000))
        session.add(QuotaCounter(config_id=config, day=now.date(), used_micro_usd=300_000))
        session.commit()
    with time_machine.travel(now, tick=False):
        at = console.page(PAGE, admin).run()
        button(at, f"edit-{config}").click().run()
        fill_form(at, **{"Daily budget (USD)": "abc"})
        at.button(key="FormSubmitter:provider_form-Save changes").click().run()
        assert any(e.startswith("Daily budget (USD):") for e in errors(at)), errors(at)
        with console.db.session() as session:
            assert session.get(ProviderConfig, config).daily_budget_micro_usd is None  # type: ignore[union-attr]

        fill_form(at, **{"Daily budget (USD)": "1", "Monthly budget (USD)": "$3"})
        at.button(key="FormSubmitter:provider_form-Save changes").click().run()
        assert not at.exception and not [e for e in errors(at) if "budget" in e]
        with console.db.session() as session:
            row = session.get(ProviderConfig, config)
            assert row is not None
            assert (row.daily_budget_micro_usd, row.monthly_budget_micro_usd) == (
                1_000_000,
                3_000_000,
            )
        at = console.page(PAGE, admin).run()
    bars = [p.proto.text for p in at.get("progress")]
    assert "Today: $0.30 of $1.00 budget (30%)" in bars
    assert "This month: $1.00 of $3.00 budget (33%)" in bars
    (outlook,) = [c.value for c in at.caption if "budget" in c.value]
    assert re.fullmatch(
        r"Daily budget: not reached today at the last 7 days' rate · "
        r"Monthly budget reached about Dec \d+",
        outlook,
    ), outlook
    # The form shows the budgets as typed back, not as micro-dollars.
    button(at, f"edit-{config}").click().run()
    budgets = {w.label: w.value for w in at.text_input if "budget" in w.label}
    assert budgets == {"Daily budget (USD)": "1", "Monthly budget (USD)": "3"}


def test_a_negative_priority_is_refused_in_words(
    console: Console, fake_providers: FakeProviderServer
) -> None:
    """Not just a red border: the form says what is wrong, and nothing is saved."""
    allow_planted_keys(fake_providers)
    admin, _ = console.add_user("ada")
    config = add_config(console.db, fake_providers, "openai", display_name="Mini", priority=100)
    at = console.page(PAGE, admin).run()
    button(at, f"edit-{config}").click().run()
    fill_form(at, Priority=-5)
    at.button(key="FormSubmitter:provider_form-Save changes").click().run()
    assert not at.exception
    assert error_under(at, "Priority") == "Priority: must not be negative."
    with console.db.session() as session:
        assert session.get(ProviderConfig, config).priority == 100  # type: ignore[union-attr]
