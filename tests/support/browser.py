"""Helpers for the Playwright tests of the console."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect


def field(page: Page, label: str) -> Locator:
    return page.get_by_role("textbox", name=label, exact=True)


def sign_in(page: Page, username: str, password: str) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    field(page, "Username").fill(username)
    field(page, "Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
