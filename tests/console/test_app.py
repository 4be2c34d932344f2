"""The console starts, says when its database is not migrated, and answers the health check.

Signing in, setup and the pages are tested in test_pages_*.py and test_browser_*.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from streamlit.testing.v1 import AppTest

from core.config import PROJECT_ROOT
from core.usage import spool, writer
from tests.support.console_resources import fresh_console_resources
from tests.support.console_server import ConsoleServer
from tests.support.database import MigratedDatabase
from tests.support.routing import usage_rows
from tests.support.spool import good, plant, spool_line

APP = str(PROJECT_ROOT / "app.py")


@pytest.fixture
def console_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    # AppTest leaves the app installed as sys.modules["__main__"]; put ours back afterwards so
    # a later multiprocessing "spawn" in this process does not re-run the app in its children.
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    with fresh_console_resources():
        yield monkeypatch


def test_a_ready_database_opens_the_console(
    db: MigratedDatabase, console_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    console_env.setenv("AI_CONSOLE_DATABASE_URL", db.url)
    console_env.setenv("AI_CONSOLE_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(APP).run()
    assert not at.exception and not at.error
    assert at.title[0].value == "AI Provider Console"
    assert at.subheader[0].value == "Set up the console"  # no user yet


def test_home_page_says_how_to_fix_an_unmigrated_database(
    empty_database: str, console_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    console_env.setenv("AI_CONSOLE_DATABASE_URL", empty_database)
    console_env.setenv("AI_CONSOLE_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(APP).run()
    assert not at.exception
    assert "python -m core migrate" in at.error[0].value


@pytest.mark.slow
def test_the_real_server_starts_and_answers_health(tmp_path: Path) -> None:
    env = {"AI_CONSOLE_DATA_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "core", "migrate"], cwd=PROJECT_ROOT,
                   env={**os.environ, **env}, check=True, capture_output=True)  # fmt: skip
    with ConsoleServer(env) as console:
        assert console.health() == "ok"
    assert "Traceback" not in console.output


@pytest.mark.slow
@pytest.mark.browser
def test_a_new_user_sees_the_setup_page_in_a_browser(
    db: MigratedDatabase, page: Page, artifacts: Path
) -> None:
    env = {"AI_CONSOLE_DATABASE_URL": db.url, "AI_CONSOLE_DATA_DIR": str(db.settings.data_dir)}
    with ConsoleServer(env, page) as console:
        page.goto(console.url)
        expect(page.get_by_role("heading", name="AI Provider Console")).to_be_visible()
        expect(page.get_by_text("Set up the console")).to_be_visible()
        page.screenshot(path=artifacts / f"home-{db.backend}.png", full_page=True)
    assert "Traceback" not in console.output


def test_the_console_stores_the_usage_rows_a_dead_backend_left(
    db: MigratedDatabase, console_env: pytest.MonkeyPatch
) -> None:
    """A backend was killed before its writer stored its rows, and no router starts again:
    the console's writer stores them."""
    dead = [good(n) for n in range(3)]
    spooled = spool.database_directory(db.settings.usage_spool_dir, db.engine.url)
    plant(spooled / f"4242-dead{spool.SUFFIX}", b"".join(spool_line(r) for r in dead))
    console_env.setenv("AI_CONSOLE_DATABASE_URL", db.url)
    console_env.setenv("AI_CONSOLE_FERNET_KEYS", db.settings.fernet_keys[0])
    console_env.setenv("AI_CONSOLE_DATA_DIR", str(db.settings.data_dir))
    before = set(writer._LIVE)
    at = AppTest.from_file(APP).run()
    assert not at.exception
    [started] = set(writer._LIVE) - before  # the console's own
    assert started.flush()  # returns after the writer's first turn, orphans included
    assert sorted(r.attempt_id for r in usage_rows(db)) == sorted(r.attempt_id for r in dead)
    assert not list(spooled.glob(f"*-dead{spool.SUFFIX}"))
