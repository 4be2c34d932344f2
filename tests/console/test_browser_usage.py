"""End to end in headless Chromium: after `python -m core demo-data`, an analyst who signs in
lands on Usage and sees its charts drawn, cost by service among them, and filters by a service.
The screenshots are kept in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core.cli import main
from tests.support.browser import sign_in
from tests.support.console_server import ConsoleServer, with_analyst
from tests.support.database import MigratedDatabase

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_an_analyst_sees_the_demo_data_charted(
    db: MigratedDatabase, page: Page, artifacts: Path
) -> None:
    assert main(["demo-data", "--days", "30", "--calls", "5000"], settings=db.settings) == 0
    env = with_analyst(db)
    with ConsoleServer(env, page) as console:
        page.goto(console.url)
        sign_in(page, "ann", "analyst password")
        expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
        # The metric's label; once the cost chart has drawn, its axis title says the same.
        expect(page.get_by_role("paragraph").filter(has_text="Cost (USD)")).to_be_visible()
        # Four over time and by task, then cost by service and by tag (demo calls name both).
        expect(page.locator(".js-plotly-plot")).to_have_count(6)
        expect(page.get_by_role("heading", name="Cost by service")).to_be_visible()
        # The configs table, and the demo configs' limits with their use and forecast.
        expect(page.get_by_test_id("stDataFrame")).to_have_count(2)
        expect(page.get_by_role("heading", name="Limits and budgets")).to_be_visible()
        expect(page.get_by_role("button", name="Export CSV")).to_be_visible()
        # Demo calls read a prompt cache on about a third of calls: what that saved is shown.
        expect(page.get_by_test_id("stMetric").filter(has_text="Saved by caching")).to_contain_text(
            "$"
        )
        expect(page.get_by_text("Prompt cache:", exact=False)).to_contain_text("were read from")
        page.set_viewport_size({"width": 1400, "height": 2600})  # the page scrolls inside
        expect(page.locator(".js-plotly-plot")).to_have_count(6)
        page.screenshot(path=artifacts / f"usage-{db.backend}.png", full_page=True)

        calls = page.get_by_test_id("stMetric").filter(has_text="Calls").first
        everything = calls.inner_text()
        page.get_by_role("combobox", name="Service").click()
        page.get_by_role("option", name="photo-check").click()
        # Only the photo checks' calls: fewer, and cost by service shows that one service.
        expect(calls).not_to_have_text(everything)
        expect(page.locator(".js-plotly-plot")).to_have_count(6)
        expect(page.get_by_test_id("stPlotlyChart").nth(4)).to_contain_text("photo-check")
        expect(page.get_by_test_id("stPlotlyChart").nth(4)).not_to_contain_text("cv-builder")
        page.screenshot(path=artifacts / f"usage-by-service-{db.backend}.png", full_page=True)

        # A filter that leaves a chart nothing to draw says so instead of axes from -1 to 1
        # (issue 16, item 3): failed calls have calls and latency, but no cost and no tokens.
        page.get_by_role("combobox", name="Service").click()
        page.get_by_role("option", name="(any)").click()
        page.get_by_role("combobox", name="Status").click()
        page.get_by_role("option", name="error", exact=True).click()
        expect(page.get_by_text("No cost to draw: only answered calls")).to_be_visible()
        expect(page.get_by_text("No cost to draw for these calls.")).to_have_count(
            2
        )  # by service, tag
        expect(page.get_by_text("No tokens to draw", exact=False).first).to_be_visible()
        expect(page.locator(".js-plotly-plot")).to_have_count(2)
        page.screenshot(path=artifacts / f"usage-errors-only-{db.backend}.png", full_page=True)
    assert "Traceback" not in console.output
