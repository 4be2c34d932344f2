"""End to end in headless Chromium against the real console: first-run setup with the token
`python -m core migrate` prints, enrolment, logout, sign-in with password and code, and what an
analyst sees. No page ever carries a password hash, TOTP secret or setup token.

Codes: enrolment uses the current 30-second step; the later sign-in uses the next step's code,
which valid_window=1 accepts and which no earlier code used, so no test waits for the clock.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from core import accounts
from core.access import Actor
from core.config import PROJECT_ROOT
from core.models import AdminActionLog, User
from tests.support.browser import field, press, sign_in
from tests.support.console_server import ConsoleServer
from tests.support.database import MigratedDatabase
from ui import COOKIE_NAME

pytestmark = [pytest.mark.slow, pytest.mark.browser]
PASSWORD = "correct horse battery"
ANALYST_PASSWORD = "ledger quartz meadow"


def migrate(env: dict[str, str]) -> str:
    """Run `python -m core migrate` as `make run` does; return the setup token it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "core", "migrate"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"first super-admin:\n\n    (\S+)\n", result.stdout)
    assert match, result.stdout
    return match.group(1)


def expect_nav(page: Page, *titles: str) -> None:
    """The sidebar lists these pages in this order (other pages may sit between them)."""
    expect(page.get_by_test_id("stSidebar").get_by_test_id("stPageLink-NavLink")).to_contain_text(
        list(titles)
    )


ADMIN_ONLY = ("Providers", "Alerts", "Users", "Audit log")


def test_first_run_setup_enrolment_and_sign_in(
    db: MigratedDatabase, page: Page, browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    env = {"AI_CONSOLE_DATABASE_URL": db.url, "AI_CONSOLE_DATA_DIR": str(tmp_path)}
    token = migrate(env)
    pages_html: list[str] = []
    with ConsoleServer(env, page) as console:
        # First run: the token creates the first super-admin, who must enrol first.
        page.goto(console.url)
        expect(page.get_by_role("heading", name="Set up the console")).to_be_visible()
        field(page, "Setup token").fill(token)
        field(page, "Username for the first super-admin").fill("ada")
        field(page, "Display name (optional)").fill("Ada Lovelace")
        field(page, "Password").fill(PASSWORD)
        field(page, "Repeat the password").fill(PASSWORD + "!")  # a slip
        press(page, "Create super-admin")
        # The error under its field; what was typed stays but the passwords, and the pasted
        # token is kept without being shown again.
        expect(page.get_by_text("The two passwords differ.")).to_be_visible()
        expect(page.get_by_text("The token you pasted is kept")).to_be_visible()
        expect(field(page, "Username for the first super-admin")).to_have_value("ada")
        expect(field(page, "Display name (optional)")).to_have_value("Ada Lovelace")
        for emptied in ("Setup token", "Password", "Repeat the password"):
            expect(field(page, emptied)).to_have_value("")
        page.screenshot(path=artifacts / f"setup-after-an-error-{db.backend}.png")
        pages_html.append(page.content())
        field(page, "Password").fill(PASSWORD)
        field(page, "Repeat the password").fill(PASSWORD)
        press(page, "Create super-admin")
        expect(page.get_by_text("Super-admins must set up an authenticator app")).to_be_visible()
        expect(page.get_by_role("img").first).to_be_visible()  # the QR code
        secret = page.locator("code").first.inner_text().replace(" ", "")
        totp = pyotp.TOTP(secret)
        field(page, "Code").fill(totp.now())
        press(page, "Turn on two-step verification")
        expect(page.get_by_text("Lost your phone?")).to_be_visible()
        expect_nav(page, "Users", "Audit log", "Account")
        pages_html.append(page.content())

        # Log out, then back in with the password and a code never used before.
        press(page, "Log out")
        sign_in(page, "ada", PASSWORD)
        expect(page.get_by_role("heading", name="Two-step verification")).to_be_visible()
        field(page, "Code").fill(totp.at(time.time() + totp.interval))
        press(page, "Verify")
        expect(
            page.get_by_role("heading", name="Providers", exact=True)
        ).to_be_visible()  # lands there
        expect_nav(page, "Providers", "Users", "Audit log", "Account")
        pages_html.append(page.content())

        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_text("matching entries")).to_be_visible()
        grid = page.get_by_test_id("stDataFrame")
        for action in ("setup.completed", "auth.mfa_enrolled", "auth.logout", "auth.login"):
            expect(grid.get_by_text(action).first).to_be_attached()
        page.screenshot(path=artifacts / f"audit-after-first-run-{db.backend}.png", full_page=True)
        pages_html.append(page.content())

        # An analyst (added by an operator) sees only their own pages, even by URL.
        with db.session() as session, session.begin():
            accounts.create_user(session, Actor.cli(), "ann", ANALYST_PASSWORD, "analyst")
        analyst = browser.new_context(viewport={"width": 1400, "height": 900})
        analyst.set_default_timeout(20_000)
        other = analyst.new_page()
        other.goto(console.url)
        sign_in(other, "ann", ANALYST_PASSWORD)
        expect(other.get_by_text("Signed in as ann (analyst)")).to_be_visible()
        for title in ADMIN_ONLY:
            expect(
                other.get_by_test_id("stSidebar")
                .get_by_test_id("stPageLink-NavLink")
                .filter(has_text=title)
            ).to_have_count(0)
        # A typed URL is a new page load: the sign-in cookie (written by a component once
        # signed in) keeps her signed in, and the Users page says in words it is not hers.
        other.wait_for_function(f"document.cookie.includes('{COOKIE_NAME}=')")
        other.goto(f"{console.url}/users")
        refusal = "Users is for super-admins; you are signed in as an analyst."
        expect(other.get_by_text(refusal)).to_be_visible()
        expect(other.get_by_text("Signed in as ann (analyst)")).to_be_visible()
        assert other.get_by_text("Page not found").count() == 0
        assert other.get_by_test_id("stDataFrame").count() == 0  # no user list
        other.screenshot(path=artifacts / f"analyst-{db.backend}.png", full_page=True)
        pages_html.append(other.content())
        # Reloads restore the session from the same cookie: one sign-in in the trail, not one
        # per page load.
        for _ in range(2):
            other.reload()
            expect(other.get_by_text("Signed in as ann (analyst)")).to_be_visible()
        with db.session() as session:
            vias = session.scalars(
                select(AdminActionLog.details)
                .where(AdminActionLog.action == "auth.login", AdminActionLog.actor_label == "ann")
                .order_by(AdminActionLog.id)
            ).all()
        assert vias == [{"via": "password"}, {"via": "cookie"}]
        analyst.close()

    assert "Traceback" not in console.output
    with db.session() as session:
        hashes = session.scalars(select(User.password_hash)).all()
    for html in pages_html:
        for secret_text in (secret, token, PASSWORD, ANALYST_PASSWORD, *hashes):
            assert secret_text not in html
