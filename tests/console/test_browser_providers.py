"""End to end in headless Chromium: a super-admin adds an OpenAI-type provider pointing at the
fake server, tests it, routes extraction to it, edits its limit and deletes it. The planted key
never appears in any page's HTML."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from core.models import ProviderConfig
from tests.fakes import FakeProviderServer
from tests.support.browser import field, press, sign_in_with_code
from tests.support.console_server import ConsoleServer, with_admin
from tests.support.database import MigratedDatabase

pytestmark = [pytest.mark.slow, pytest.mark.browser]
KEY = "sk-proj-PLANTEDbrowser0123456789"
PASSWORD = "correct horse battery"


def test_add_test_route_edit_delete_a_provider(
    db: MigratedDatabase, page: Page, fake_providers: FakeProviderServer, artifacts: Path
) -> None:
    fake_providers.api_keys["openai"] = {KEY}
    env, secret = with_admin(db, password=PASSWORD)
    html: list[str] = []
    with ConsoleServer(env, page) as console:
        page.goto(console.url)
        sign_in_with_code(page, "ada", PASSWORD, secret)
        expect(page.get_by_role("heading", name="Providers", exact=True)).to_be_visible()
        expect(page.get_by_text("No provider is configured yet")).to_be_visible()

        # Add an OpenAI config (gpt-4o-mini is its first known model) at the fake server.
        press(page, "Add provider")
        page.get_by_role("combobox", name="Provider").click()
        page.get_by_role("option", name="OpenAI").click()
        expect(page.get_by_role("combobox", name="Model")).to_have_value("gpt-4o-mini")
        field(page, "API key").fill(KEY)
        field(page, "Display name").fill("Fake OpenAI")
        page.get_by_test_id("stForm").get_by_text("Job extraction", exact=True).click()
        page.get_by_text("Advanced").click()
        field(page, "Base URL").fill(fake_providers.openai_base_url)
        # (While typing, the key is in the browser's own password field; from here on no
        # page the server draws may carry it.)
        press(page, "Create provider")
        expect(page.get_by_role("heading", name="Fake OpenAI")).to_be_visible()
        html.append(page.content())

        # Test it, and see it serve extraction.
        press(page, "Test")
        expect(page.get_by_text("Key accepted; model gpt-4o-mini is available.")).to_be_visible()
        # Routing now: extraction is served (by it); the three other tasks still are not.
        expect(page.get_by_text("Nobody: calls fail")).to_have_count(3)
        expect(page.get_by_text("Fake OpenAI")).to_have_count(2)  # routing card and heading
        page.screenshot(path=artifacts / f"providers-{db.backend}.png", full_page=True)
        html.append(page.content())

        # A provider's answer is shown as text: a Markdown link in it is no link.
        fake_providers.fail_next(
            "openai", 404, message="Moved: [the fix](http://evil.example) **now**"
        )
        press(page, "Test")
        # (ui.plain breaks bare URLs with an invisible word joiner after "http:")
        expect(page.get_by_text("Moved: [the fix](http:").first).to_be_visible()
        expect(page.get_by_text("evil.example) **now**").first).to_be_visible()
        expect(page.locator('a[href*="evil.example"]')).to_have_count(0)
        expect(page.locator("strong", has_text="now")).to_have_count(0)
        html.append(page.content())

        # Pointing the stored key at another host without pasting it again is refused, and
        # that host hears nothing.
        press(page, "Edit")
        page.get_by_text("Advanced").click()
        with FakeProviderServer() as elsewhere:
            field(page, "Base URL").fill(elsewhere.openai_base_url)
            press(page, "Save changes")
            expect(page.get_by_text("API key: paste the API key again")).to_be_visible()
            assert elsewhere.requests == []
        field(page, "Base URL").fill(fake_providers.openai_base_url)

        # Edit its daily limit and give it a $1 daily budget (the key field left empty keeps
        # the key): the card shows both, and the forecast at the last 7 days' rate.
        field(page, "Daily token limit").fill("250000")
        field(page, "Daily budget (USD)").fill("1")
        press(page, "Save changes")
        expect(page.get_by_text("Today: 0 of 250,000 tokens (0%)")).to_be_visible()
        expect(page.get_by_text("Today: $0.00 of $1.00 budget (0%)")).to_be_visible()
        expect(page.get_by_text("Daily budget: not reached today")).to_be_visible()
        page.screenshot(path=artifacts / f"providers-budget-{db.backend}.png", full_page=True)
        html.append(page.content())

        # Delete, confirming in the dialog, which warns that extraction is left unserved.
        press(page, "Delete")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("No other active provider serves Job extraction")
        press(page, "Delete", within=dialog)
        expect(page.get_by_text("No provider is configured yet")).to_be_visible()
        html.append(page.content())

    assert "Traceback" not in console.output
    for content in html:
        assert KEY not in content
    with db.session() as session:
        assert session.scalars(select(ProviderConfig)).all() == []


def test_edit_opens_where_the_user_clicked(
    db: MigratedDatabase, page: Page, artifacts: Path
) -> None:
    """Issue 16, item 1: with ten cards, Edit on the last one used to open the form ~1,500 px
    above, out of sight. It opens in that card, in view."""
    from core.cli import main

    assert main(["demo-data", "--days", "2", "--calls", "200"], settings=db.settings) == 0
    env, secret = with_admin(db, password=PASSWORD)
    with ConsoleServer(env, page) as console:
        page.goto(console.url)
        sign_in_with_code(page, "ada", PASSWORD, secret)
        last = page.get_by_role("heading", name="Demo · Gemini Pro", exact=True)
        expect(last).to_be_visible()
        last.scroll_into_view_if_needed()
        page.get_by_role("button", name="Edit").last.click()
        form = page.get_by_role("heading", name="Edit Demo · Gemini Pro")
        expect(form).to_be_in_viewport()
        expect(page.get_by_role("button", name="Save changes")).to_be_visible()
        page.screenshot(path=artifacts / f"providers-edit-in-place-{db.backend}.png")
    assert "Traceback" not in console.output
