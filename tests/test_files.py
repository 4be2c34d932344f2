"""Local state is private whatever the umask: the data folder 0700, the SQLite database and its
-wal and -shm files 0600, the embedded encryption key 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.config import Settings
from core.crypto import load_cipher
from core.db import make_engine


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual default: files 0644, folders 0755
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_folder_and_database_are_private(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    settings = Settings(database_url=f"sqlite:///{data / 'console.db'}", data_dir=data)
    load_cipher(settings, announce=lambda _message: None)
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:  # an open connection keeps -wal and -shm in place
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.commit()
            files = {p.name: mode(p) for p in data.iterdir()}
    finally:
        engine.dispose()
    assert mode(data) == 0o700
    assert files == {
        "console.db": 0o600,
        "console.db-wal": 0o600,
        "console.db-shm": 0o600,
        "fernet.key": 0o600,
    }


def test_an_existing_data_folder_and_database_are_made_private(
    tmp_path: Path, umask_022: None
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    database = data / "console.db"
    for path in (database, data / "console.db-wal"):
        path.touch(mode=0o644)
    engine = make_engine(Settings(database_url=f"sqlite:///{database}", data_dir=data))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            assert (mode(data), mode(database), mode(data / "console.db-wal")) == (
                0o700,
                0o600,
                0o600,
            )
    finally:
        engine.dispose()


def test_a_folder_chosen_by_the_operator_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    """A database placed in a shared folder (say /srv/db) is private; the folder is not ours."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    database = shared / "console.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{database}", data_dir=tmp_path / "d"))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert mode(shared) == 0o755 and mode(database) == 0o600
