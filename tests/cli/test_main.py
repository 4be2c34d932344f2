"""`python -m core` as an operator runs it: in a shell, configured by environment variables."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from core.config import PROJECT_ROOT


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=PROJECT_ROOT,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_on_a_fresh_machine_creates_the_database_and_the_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_cli("migrate", env={"AI_CONSOLE_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    assert "is at revision" in result.stdout and "(head)" in result.stdout
    assert (data / "console.db").exists()
    assert f"{data / 'fernet.key'} (mode 0600)" in result.stderr
    assert stat.S_IMODE((data / "fernet.key").stat().st_mode) == 0o600

    again = run_cli("migrate", env={"AI_CONSOLE_DATA_DIR": str(data)})
    assert again.returncode == 0 and "Generated" not in again.stderr


def test_migrate_in_production_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_cli(
        "migrate", env={"AI_CONSOLE_DATA_DIR": str(data), "AI_CONSOLE_ENV": "production"}
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: AI_CONSOLE_FERNET_KEYS is required when AI_CONSOLE_ENV=production; create a key "
        "with `python -m core keys generate` and keep it in your secret store"
    ]
    assert not data.exists()


def test_bad_configuration_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = run_cli("migrate", env={"AI_CONSOLE_DATABASE_URL": "mysql://u:pw@h/db"})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "pw" not in result.stderr


def test_unreachable_database_is_one_line() -> None:
    result = run_cli(
        "migrate",
        env={
            "AI_CONSOLE_FERNET_KEYS": Fernet.generate_key().decode(),
            # Port 9 (discard) on loopback: nothing listens there.
            "AI_CONSOLE_DATABASE_URL": "postgresql+psycopg://postgres:s3cret@127.0.0.1:9/x",
        },
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the database: connection")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr


def test_keys_generate_prints_a_usable_key() -> None:
    result = run_cli("keys", "generate", env={})
    assert result.returncode == 0
    Fernet(result.stdout.strip())


def test_unknown_command_is_a_usage_error() -> None:
    result = run_cli("frobnicate", env={})
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
