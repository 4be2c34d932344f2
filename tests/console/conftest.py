"""Fixtures for the console tests: `console`, the pages over the test database in AppTest."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from core.accounts import rules
from core.crypto import load_cipher
from tests.support.console_resources import fresh_console_resources
from tests.support.database import MigratedDatabase
from tests.support.pages import Console


@pytest.fixture
def console(
    db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    monkeypatch.setenv("AI_CONSOLE_DATABASE_URL", db.url)
    monkeypatch.setenv("AI_CONSOLE_FERNET_KEYS", db.settings.fernet_keys[0])
    monkeypatch.setenv("AI_CONSOLE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.setattr(rules, "BCRYPT_ROUNDS", 4)
    # AppTest installs each page as sys.modules["__main__"] and leaves it there; a later
    # multiprocessing "spawn" in this process would then re-run that page in its children.
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    with fresh_console_resources():
        yield Console(db, load_cipher(db.settings))
