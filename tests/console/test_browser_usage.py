"""End to end in headless Chromium: after `python -m core demo-data`, an analyst who signs in
lands on Usage and sees its four charts drawn. The screenshot is kept in test-artifacts/."""

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
        expect(page.locator(".js-plotly-plot")).to_have_count(4)
        # The configs table, and the demo configs' limits with their use and forecast.
        expect(page.get_by_test_id("stDataFrame")).to_have_count(2)
        expect(page.get_by_role("heading", name="Limits and budgets")).to_be_visible()
        expect(page.get_by_role("button", name="Export CSV")).to_be_visible()
        # Demo calls read a prompt cache on about a third of calls: what that saved is shown.
        expect(page.get_by_test_id("stMetric").filter(has_text="Saved by caching")).to_contain_text(
            "$"
        )
        expect(page.get_by_text("Prompt cache:", exact=False)).to_contain_text("were read from")
        page.set_viewport_size({"width": 1400, "height": 2200})  # the page scrolls inside
        expect(page.locator(".js-plotly-plot")).to_have_count(4)
        page.screenshot(path=artifacts / f"usage-{db.backend}.png", full_page=True)
    assert "Traceback" not in console.output
