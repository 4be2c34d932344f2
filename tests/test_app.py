"""The console starts, says whether its database is ready, and answers the health check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import PROJECT_ROOT
from tests.conftest import MigratedDatabase

APP = str(PROJECT_ROOT / "app.py")


@pytest.fixture
def console_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    st.cache_resource.clear()  # the app caches settings and engine per process
    yield monkeypatch
    st.cache_resource.clear()


def test_home_page_reports_a_ready_database(
    db: MigratedDatabase, console_env: pytest.MonkeyPatch
) -> None:
    console_env.setenv("AI_CONSOLE_DATABASE_URL", db.url)
    at = AppTest.from_file(APP).run()
    assert not at.exception
    assert at.title[0].value == "AI Provider Console"
    assert "Database ready" in at.success[0].value
    assert db.backend in at.success[0].value


def test_home_page_says_how_to_fix_an_unmigrated_database(
    empty_database: str, console_env: pytest.MonkeyPatch
) -> None:
    console_env.setenv("AI_CONSOLE_DATABASE_URL", empty_database)
    at = AppTest.from_file(APP).run()
    assert not at.exception
    assert "python -m core migrate" in at.error[0].value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_real_server_starts_and_answers_health(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "AI_CONSOLE_DATA_DIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-m", "core", "migrate"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            APP,
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = _poll(f"http://127.0.0.1:{port}/_stcore/health", server)
        assert body == "ok"
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0]
    assert "Traceback" not in output


def _poll(url: str, server: subprocess.Popen[str], deadline_s: float = 60) -> str:
    """Wait for the server to answer (it takes a few seconds to start), or fail with why."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}: {server.stdout.read()}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"no answer from {url} within {deadline_s} s")
