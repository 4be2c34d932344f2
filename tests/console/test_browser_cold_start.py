"""End to end in headless Chromium: the first visitor of a freshly started console sees the
console's own loading state, then the setup page, and never a page name before signing in
(Streamlit's own sidebar listed pages/'s raw file names, app, account, audit, ..., until some
session had run app.py). bench/cold_start.py measures how long each step takes."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.console_server import ConsoleServer
from tests.support.database import MigratedDatabase

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Kept by the browser itself from before the console's first byte: every state the page passes
# through is seen, however short, without polling.
WATCH = """
window.__seen = {loading: false, links: []};
new MutationObserver(() => {
  const body = document.body;
  if (!body) return;
  if (body.textContent.includes("Starting the console")) window.__seen.loading = true;
  const links = document.querySelectorAll(
    '[data-testid="stSidebarNav"] a, [data-testid="stSidebarNavLink"], '
    + '[data-testid="stPageLink-NavLink"]');
  for (const link of links) window.__seen.links.push(link.textContent.trim());
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


def test_the_first_visitor_sees_a_loading_state_and_no_page_names(
    db: MigratedDatabase, page: Page, artifacts: Path
) -> None:
    env = {
        "AI_CONSOLE_DATABASE_URL": db.url,
        "AI_CONSOLE_DATA_DIR": str(db.settings.data_dir),
        "AI_CONSOLE_FERNET_KEYS": db.settings.fernet_keys[0],
    }
    page.add_init_script(WATCH)
    with ConsoleServer(env, page) as console:
        page.goto(console.url)  # the server's very first request
        expect(page.get_by_role("heading", name="Set up the console")).to_be_visible()
        expect(page.get_by_text("Starting the console")).to_have_count(0)  # gone once drawn
        seen = page.evaluate("window.__seen")
        page.screenshot(path=artifacts / f"setup-cold-start-{db.backend}.png")
        assert seen["loading"], "the console's loading state never showed"
        assert seen["links"] == []  # no page names, not even for a moment
        assert page.get_by_test_id("stSidebar").count() == 0  # and no empty sidebar

        page.goto(f"{console.url}/users")  # a deep link later: the same, without loading
        expect(page.get_by_role("heading", name="Set up the console")).to_be_visible()
        assert page.evaluate("window.__seen") == {"loading": False, "links": []}
    assert "Traceback" not in console.output
