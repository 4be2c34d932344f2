"""Helpers for the Playwright tests of the console."""

from __future__ import annotations

import pyotp
from playwright.sync_api import Locator, Page, expect


def field(page: Page, label: str) -> Locator:
    return page.get_by_role("textbox", name=label, exact=True)


def idle(page: Page) -> None:
    """Wait until the console has finished its run: the whole page is drawn.

    Under load, a click on a button made while a run is still drawing the page was lost: the
    browser sent the console nothing (seen in the websocket log of a failed run, 3 s into a run
    started by choosing a provider). So, like a user who waits for the page, a test presses a
    button only once the run its last step started is over. The step before must have waited
    for something that run drew, so that the run has begun.
    """
    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-script-state", "notRunning")


def press(page: Page, name: str, within: Locator | None = None) -> None:
    """Click the button named `name` (in `within`, else anywhere) once the page is idle.

    A text field that still has the focus is left first. Leaving it on the click itself made
    the field drop its "Press Enter" hint and the form below it move up between the mouse's
    press and release, so the button never got the click (seen in a failed run's websocket
    log: nothing was sent; Streamlit #8725 describes the same with a text area).
    """
    idle(page)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    (within or page).get_by_role("button", name=name).click()


def sign_in(page: Page, username: str, password: str) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    field(page, "Username").fill(username)
    field(page, "Password").fill(password)
    press(page, "Sign in")


def sign_in_with_code(page: Page, username: str, password: str, secret: str) -> None:
    """Sign in with the password, then the code the authenticator app with `secret` shows."""
    sign_in(page, username, password)
    field(page, "Code").fill(pyotp.TOTP(secret).now())
    press(page, "Verify")
