"""Settings read from the environment (AI_CONSOLE_*).

Nothing happens at import time: callers build a `Settings` with `Settings.from_env()` (or
construct one directly in tests) and pass it on. Every variable is documented in README.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("development", "production")
MIN_COOKIE_KEY_LENGTH = 32


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which one and what to do."""


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Immutable; build a new one to change anything."""

    database_url: str
    fernet_keys: tuple[str, ...] = ()
    env: str = "development"
    data_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "data")
    db_pool_size: int = 5
    db_max_overflow: int = 10
    # Signs the console's sign-in cookie; "" means the development default (core.auth.cookie_key).
    cookie_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(
                f"AI_CONSOLE_ENV must be one of {', '.join(ENVIRONMENTS)}, not {self.env!r}"
            )
        try:
            url = make_url(self.database_url)
        except ArgumentError:
            raise ConfigError(
                "AI_CONSOLE_DATABASE_URL is not a database URL; expected e.g. "
                "sqlite:///data/console.db or postgresql+psycopg://user@host:5432/db"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"AI_CONSOLE_DATABASE_URL uses {url.get_backend_name()!r}; "
                "only sqlite and postgresql (postgresql+psycopg://...) are supported"
            )
        if self.db_pool_size < 1 or self.db_max_overflow < 0:
            raise ConfigError(
                "AI_CONSOLE_DB_POOL_SIZE must be ≥ 1 and AI_CONSOLE_DB_MAX_OVERFLOW ≥ 0"
            )
        if self.cookie_key and len(self.cookie_key) < MIN_COOKIE_KEY_LENGTH:
            raise ConfigError(
                f"AI_CONSOLE_COOKIE_KEY must be at least {MIN_COOKIE_KEY_LENGTH} characters; "
                "make one with `python -m core keys generate`"
            )

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def fernet_key_file(self) -> Path:
        """Where the embedded (development) key lives when AI_CONSOLE_FERNET_KEYS is unset."""
        return self.data_dir / "fernet.key"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read AI_CONSOLE_* from `environ` (default: os.environ)."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("AI_CONSOLE_DATA_DIR") or PROJECT_ROOT / "data")
        database_url = env.get("AI_CONSOLE_DATABASE_URL") or f"sqlite:///{data_dir / 'console.db'}"
        keys = tuple(
            k.strip() for k in env.get("AI_CONSOLE_FERNET_KEYS", "").split(",") if k.strip()
        )
        return cls(
            database_url=database_url,
            fernet_keys=keys,
            env=env.get("AI_CONSOLE_ENV", "development").strip().lower() or "development",
            data_dir=data_dir,
            db_pool_size=_int(env, "AI_CONSOLE_DB_POOL_SIZE", 5),
            db_max_overflow=_int(env, "AI_CONSOLE_DB_MAX_OVERFLOW", 10),
            cookie_key=env.get("AI_CONSOLE_COOKIE_KEY", "").strip(),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
