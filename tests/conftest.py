"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

The `db` fixture is parametrized over both backends. Schemas come from the real migrations:
SQLite tests copy a file migrated once per run; PostgreSQL tests share one database created for
this run (named after the pid, dropped at the end) and empty its tables after each test.
PostgreSQL comes from TEST_DATABASE_URL; without it those tests skip, and with CI=true any skip
fails the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from core.config import Settings
from core.crypto import generate_key
from core.db import make_engine, upgrade
from tests.support.console_server import ARTIFACTS
from tests.support.database import (
    BACKENDS,
    IN_CI,
    MigratedDatabase,
    PostgresServer,
    skip_or_fail,
)

# The fake provider server, and a guard that fails any test reaching beyond loopback.
pytest_plugins = ["tests.fakes.pytest_plugin"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        skip_or_fail(
            "TEST_DATABASE_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    server = PostgresServer(url)
    try:
        server.drop_leftovers()
    except OperationalError as exc:
        skip_or_fail(f"PostgreSQL at TEST_DATABASE_URL does not answer: {exc.orig}")
    yield server
    server.admin.dispose()


@pytest.fixture(scope="session")
def postgres_migrated(postgres: PostgresServer) -> Iterator[Engine]:
    url = postgres.create()
    engine = make_engine(Settings(database_url=url))
    upgrade(engine)
    yield engine
    engine.dispose()
    postgres.drop(url)


def _truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        tables = conn.scalars(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
            )
        ).all()
        if tables:
            # The audit log refuses TRUNCATE (a trigger); between tests, as the superuser, the
            # triggers are switched off for this transaction only.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


# --- SQLite: a migrated template file, copied per test -------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "console.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


# --- the fixtures tests use ------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fernet_key() -> str:
    return generate_key()


@pytest.fixture
def db(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, fernet_key: str
) -> Iterator[MigratedDatabase]:
    if backend == "sqlite":
        path = tmp_path / "console.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
        settings = Settings(database_url=url, fernet_keys=(fernet_key,), data_dir=tmp_path)
        engine = make_engine(settings)
        yield MigratedDatabase(backend, url, engine, settings)
        engine.dispose()
        return
    engine = request.getfixturevalue("postgres_migrated")
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, fernet_keys=(fernet_key,), data_dir=tmp_path)
    try:
        yield MigratedDatabase(backend, url, engine, settings)
    finally:
        _truncate_all(engine)


@pytest.fixture
def empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no tables at all (for migration tests)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    url = postgres.create()
    try:
        yield url
    finally:
        postgres.drop(url)


# --- browser tests: Debian's Chromium driven by Playwright --------------------------------------

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        skip_or_fail(f"Chromium is not at {CHROMIUM} (scripts/ensure-chromium installs it)")
    # Pages run real queries on a loaded 2-core machine: give expectations the same 20 s as
    # actions instead of Playwright's 5 s default.
    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context's page (ConsoleServer(env, page) saves it when a test fails).
    The test fails if the console made the browser ask any host but this one for anything (a
    console on an internal network has no internet: fonts or icons from outside fail there)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(20_000)
    outside: list[str] = []
    context.on("request", lambda request: outside.extend(_outside([request.url])))
    yield context.new_page()
    context.close()
    assert outside == [], f"the console asked hosts other than its own for: {outside}"


LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _outside(urls: list[str]) -> list[str]:
    """The http(s) URLs among `urls` that are not on this machine."""
    found = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOOPBACK:
            found.append(url)
    return found


@pytest.fixture
def artifacts() -> Path:
    """A git-ignored folder for screenshots that reviewers look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an event loop running in the main
    thread until the session ends, and asyncio.run() refuses to start under one."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


# --- in CI nothing may skip ------------------------------------------------------------------

_skipped: list[str] = []
_passed_per_backend = dict.fromkeys(BACKENDS, 0)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)
    elif report.when == "call" and report.passed:
        for name in BACKENDS:
            if f"[{name}" in report.nodeid or f"-{name}]" in report.nodeid:
                _passed_per_backend[name] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    counts = ", ".join(f"{n} on {name}" for name, n in _passed_per_backend.items())
    terminalreporter.write_line(f"database tests passed: {counts}")
    if IN_CI and _skipped:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped)} test(s) skipped, which fails the run: {_skipped[:5]}",
            red=True,
        )


@pytest.fixture(autouse=True)
def _moved_clock(request: pytest.FixtureRequest) -> Iterator[None]:
    """AI_CONSOLE_TEST_CLOCK=2026-12-31T23:59:58+00:00 starts every in-process test at that
    moment (the clock then runs on), to hunt tests that depend on the time of day or the date.
    Tests whose other processes keep the real clock (browser, real_clock) are left alone."""
    start = os.environ.get("AI_CONSOLE_TEST_CLOCK")
    markers = ("browser", "real_clock")
    if not start or any(request.node.get_closest_marker(m) for m in markers):
        yield
        return
    import time_machine

    with time_machine.travel(start, tick=True):
        yield
