"""End to end in headless Chromium, the issue's walk-through: a config has a $1 daily budget and
has spent 85 cents of it; a super-admin adds a webhook alert rule on the Alerts page, sends a
test, and the console's own watcher delivers the 80% alert to a local listener, which the
page's Recent alerts then shows as sent. The webhook's token never appears in a page."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core.models import QuotaCounter, utcnow
from tests.fakes import FakeProviderServer
from tests.fakes.attacker_server import AttackerServer
from tests.support.browser import field, press, sign_in_with_code
from tests.support.console_server import ConsoleServer, with_admin
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config

pytestmark = [pytest.mark.slow, pytest.mark.browser]
PASSWORD = "correct horse battery"
TOKEN = "PLANTEDwebhookTOKEN77"


def wait_for(condition, what: str, within_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for an event of another process (its watcher's round), failing with `what`."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.1)


def test_a_budget_alert_reaches_a_local_webhook(
    db: MigratedDatabase, page: Page, fake_providers: FakeProviderServer, artifacts: Path
) -> None:
    env, secret = with_admin(db, password=PASSWORD)
    config = add_config(
        db, fake_providers, display_name="Billing GPT", daily_budget_micro_usd=1_000_000
    )
    with db.session() as session, session.begin():
        today = utcnow().date()  # and tomorrow, should the day turn during the test
        for day in (today, today + timedelta(days=1)):
            session.add(QuotaCounter(config_id=config, day=day, used_micro_usd=850_000))
    env["AI_CONSOLE_ALERT_INTERVAL_S"] = "0.5"
    html: list[str] = []
    with AttackerServer() as listener, ConsoleServer(env, page) as console:
        page.goto(f"{console.url}/alerts")
        sign_in_with_code(page, "ada", PASSWORD, secret)
        expect(page.get_by_role("heading", name="Alerts", exact=True)).to_be_visible()
        expect(page.get_by_text("No alert rules yet")).to_be_visible()

        field(page, "Webhook URL").fill(f"{listener.url}/hooks/{TOKEN}")
        press(page, "Add alert rule")
        expect(page.get_by_text("Webhook (JSON) to")).to_contain_text(
            "monthly budget at 80, 95, 100%"
        )
        html.append(page.content())

        # The console's watcher finds the 85% and sends the 80% alert on its own.
        wait_for(lambda: listener.requests, "the 80% alert at the listener")
        alert = json.loads(listener.requests[0].body)
        assert (alert["config"]["name"], alert["kind"], alert["threshold_percent"]) == (
            "Billing GPT",
            "usd_day",
            80,
        )
        assert (alert["used"], alert["limit"]) == (0.85, 1.0)
        press(page, "Send test")
        expect(page.get_by_text("Test alert sent to")).to_be_visible()
        assert json.loads(listener.requests[-1].body)["event"] == "test"

        page.get_by_role("link", name="Providers").click()  # and back: the page reads again
        expect(page.get_by_role("heading", name="Providers", exact=True)).to_be_visible()
        page.get_by_role("link", name="Alerts").click()
        expect(page.get_by_role("heading", name="Recent alerts")).to_be_visible()
        grid = page.get_by_test_id("stDataFrame")
        expect(grid).to_be_visible()
        expect(grid).to_contain_text("sent")
        page.screenshot(path=artifacts / f"alerts-{db.backend}.png", full_page=True)
        html.append(page.content())

    assert "Traceback" not in console.output
    for content in html:
        at = content.find(TOKEN)
        assert TOKEN not in content, content[max(0, at - 600) : at + 100]
    assert len(listener.requests) == 2
