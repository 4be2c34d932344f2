"""End to end in headless Chromium: an address typed, bookmarked or reloaded before sign-in opens
the sign-in page (not Streamlit's "Page not found") and, once signed in, the page asked for; a
page the role may not open says so in words."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import sign_in
from tests.support.console_server import ConsoleServer, with_analyst
from tests.support.database import MigratedDatabase
from ui import COOKIE_NAME

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_a_deep_link_survives_sign_in_and_a_forbidden_page_says_why(
    db: MigratedDatabase, page: Page
) -> None:
    env = with_analyst(db)
    with ConsoleServer(env, page) as console:
        # The server's very first request, a bookmark (the analyst's first page is Usage).
        page.goto(f"{console.url}/account")
        sign_in(page, "ann", "analyst password")
        expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()
        assert page.url.endswith("/account")

        # A typed URL is a new page load: it resumes from the sign-in cookie, once written.
        page.wait_for_function(f"document.cookie.includes('{COOKIE_NAME}=')")
        page.goto(f"{console.url}/providers")
        expect(
            page.get_by_text("Providers is for super-admins; you are signed in as an analyst.")
        ).to_be_visible()
        expect(page.get_by_text("does not seem to exist")).to_have_count(0)
        page.reload()  # the session resumes from its cookie on the same page
        expect(page.get_by_role("heading", name="Providers", exact=True)).to_be_visible()
        expect(page.get_by_text("does not seem to exist")).to_have_count(0)
    assert "Traceback" not in console.output
