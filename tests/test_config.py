"""Settings come from AI_CONSOLE_* variables, with clear errors and no import-time effects."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, ConfigError, Settings


def test_defaults_to_an_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"AI_CONSOLE_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'console.db'}"
    assert settings.fernet_keys == ()
    assert settings.env == "development"
    assert settings.fernet_key_file == tmp_path / "fernet.key"
    assert settings.usage_retention_days is None  # keep every usage row
    assert Settings.from_env({"AI_CONSOLE_USAGE_RETENTION_DAYS": ""}).usage_retention_days is None


def test_default_data_dir_is_the_projects_own() -> None:
    settings = Settings.from_env({})
    assert settings.data_dir == PROJECT_ROOT / "data"
    assert settings.database_url.endswith("/data/console.db")


def test_reads_every_variable() -> None:
    settings = Settings.from_env(
        {
            "AI_CONSOLE_DATABASE_URL": "postgresql+psycopg://app@db:5432/console",
            "AI_CONSOLE_FERNET_KEYS": " newkey , oldkey ,, ",
            "AI_CONSOLE_ENV": "Production",
            "AI_CONSOLE_DB_POOL_SIZE": "8",
            "AI_CONSOLE_DB_MAX_OVERFLOW": "0",
            "AI_CONSOLE_DB_CONNECT_TIMEOUT_S": "5",
            "AI_CONSOLE_DB_STATEMENT_TIMEOUT_S": "0.75",
            "AI_CONSOLE_USAGE_RETENTION_DAYS": " 400 ",
        }
    )
    assert settings.usage_retention_days == 400
    assert settings.database_url == "postgresql+psycopg://app@db:5432/console"
    assert settings.fernet_keys == ("newkey", "oldkey")
    assert settings.is_production
    assert (settings.db_pool_size, settings.db_max_overflow) == (8, 0)
    assert settings.db_timeouts.wait_s == 5.75
    assert settings.db_timeouts.libpq() == {
        "connect_timeout": 5,
        "options": "-c statement_timeout=750",
    }


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AI_CONSOLE_ENV": "staging"}, "AI_CONSOLE_ENV must be one of development, production"),
        ({"AI_CONSOLE_DATABASE_URL": "not a url"}, "AI_CONSOLE_DATABASE_URL is not a database URL"),
        ({"AI_CONSOLE_DATABASE_URL": "mysql://u@h/db"}, "only sqlite and postgresql"),
        ({"AI_CONSOLE_DB_POOL_SIZE": "many"}, "AI_CONSOLE_DB_POOL_SIZE must be a whole number"),
        ({"AI_CONSOLE_DB_POOL_SIZE": "0"}, "AI_CONSOLE_DB_POOL_SIZE must be ≥ 1"),
        ({"AI_CONSOLE_DB_CONNECT_TIMEOUT_S": "1"}, "AI_CONSOLE_DB_CONNECT_TIMEOUT_S must be ≥ 2"),
        ({"AI_CONSOLE_DB_CONNECT_TIMEOUT_S": "2.5"}, "must be a whole number"),
        ({"AI_CONSOLE_DB_STATEMENT_TIMEOUT_S": "soon"}, "must be a number of seconds"),
        ({"AI_CONSOLE_DB_STATEMENT_TIMEOUT_S": "0"}, "AI_CONSOLE_DB_STATEMENT_TIMEOUT_S above 0"),
        (
            {"AI_CONSOLE_USAGE_RETENTION_DAYS": "400d"},
            "AI_CONSOLE_USAGE_RETENTION_DAYS must be a whole number, not '400d'",
        ),
        (
            {"AI_CONSOLE_USAGE_RETENTION_DAYS": "0"},
            "AI_CONSOLE_USAGE_RETENTION_DAYS must be at least 1",
        ),
    ],
)
def test_bad_settings_get_one_clear_message(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_database_password_never_appears_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"AI_CONSOLE_DATABASE_URL": "oracle://u:hunter2@h/db"})
    assert "hunter2" not in str(caught.value)


def test_importing_core_touches_nothing(tmp_path: Path) -> None:
    """Backend services import core; that alone must not create files or connect anywhere."""
    data_dir = tmp_path / "data"
    code = (
        "import core.config, core.db, core.models, core.crypto, core.audit, core.cli\n"
        "import core.config as c; assert c.Settings  # imported, nothing built\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={"AI_CONSOLE_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert not data_dir.exists()


def test_alert_email_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {
            "AI_CONSOLE_SMTP_URL": "smtp://alerts%40corp:PLANTEDpw@mail.corp.example:2525?starttls=1",
            "AI_CONSOLE_ALERT_FROM": "ai-console@corp.example",
            "AI_CONSOLE_ALERT_INTERVAL_S": "15",
        }
    )
    smtp = settings.smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.starttls, smtp.tls, smtp.username, smtp.password) == (
        "mail.corp.example",
        2525,
        True,
        False,
        "alerts@corp",
        "PLANTEDpw",
    )
    assert settings.alert_interval_s == 15
    assert "PLANTED" not in repr(settings) and "PLANTED" not in repr(smtp)
    assert Settings.from_env({}).smtp is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AI_CONSOLE_SMTP_URL": "http://u:PLANTEDpw@mail"}, "must be an smtp:// or smtps:// URL"),
        ({"AI_CONSOLE_SMTP_URL": "smtp://u:PLANTEDpw@mail?tls=1"}, "takes only ?starttls=1"),
        ({"AI_CONSOLE_SMTP_URL": "smtps://u:PLANTEDpw@mail?starttls=1"}, "is TLS already"),
        (
            {"AI_CONSOLE_SMTP_URL": "smtp://u:PLANTEDpw@mail?starttls=1"},
            "AI_CONSOLE_ALERT_FROM must be",
        ),
        ({"AI_CONSOLE_SMTP_URL": "smtp://u:PLANTEDpw@mail:25"}, "would cross the network in clear"),
        ({"AI_CONSOLE_ALERT_INTERVAL_S": "0"}, "AI_CONSOLE_ALERT_INTERVAL_S must be"),
    ],
)
def test_bad_alert_settings_are_named_without_the_password(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        Settings.from_env(environ)
    assert "PLANTED" not in str(caught.value)
