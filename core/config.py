"""Settings read from the environment (AI_CONSOLE_*).

Nothing happens at import time: callers build a `Settings` with `Settings.from_env()` (or
construct one directly in tests) and pass it on. Every variable is documented in README.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.usage.attribution import check_service

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("development", "production")
MIN_COOKIE_KEY_LENGTH = 32
MIN_RETENTION_DAYS = 1  # raw usage rows younger than a day are never pruned
RETENTION_VARIABLE = "AI_CONSOLE_USAGE_RETENTION_DAYS"
ALLOWLIST_VARIABLE = "AI_CONSOLE_BASE_URL_ALLOWLIST"
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_N = TypeVar("_N", int, float)
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which one and what to do."""


@dataclass(frozen=True)
class DbTimeouts:
    """How long the routing path waits for PostgreSQL (see Settings)."""

    connect_s: int = 2
    statement_s: float = 2.0

    @property
    def wait_s(self) -> float:
        """The longest a caller waits for one statement: a connection, then the statement."""
        return self.connect_s + self.statement_s

    def libpq(self) -> dict[str, str | int]:
        """Connection parameters that make the server and libpq enforce them."""
        return {
            "connect_timeout": self.connect_s,
            "options": f"-c statement_timeout={round(self.statement_s * 1000)}",
        }


@dataclass(frozen=True)
class SmtpServer:
    """Where alert emails go (AI_CONSOLE_SMTP_URL): smtp://user:pass@host:587?starttls=1, or
    smtps://host:465 for TLS from the first byte. The password never appears in its repr."""

    host: str
    port: int
    tls: bool = False  # smtps: TLS from the first byte
    starttls: bool = False  # smtp with ?starttls=1: upgrade before AUTH and MAIL
    username: str = ""
    password: str = field(default="", repr=False)

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        """ConfigError naming AI_CONSOLE_SMTP_URL (never quoting it: it may hold a password)."""
        hint = "use e.g. smtp://user:pass@mail.example.com:587?starttls=1 or smtps://host:465"
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise ConfigError(f"{SMTP_VARIABLE} is not a URL; {hint}") from None
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(f"{SMTP_VARIABLE} must be an smtp:// or smtps:// URL; {hint}")
        query = parse_qs(parts.query)
        unknown = set(query) - {"starttls"}
        starttls = query.get("starttls", ["0"])[-1].lower()
        if unknown or starttls not in ("0", "1", "true", "false", "yes", "no"):
            raise ConfigError(f"{SMTP_VARIABLE} takes only ?starttls=1 (or 0); {hint}")
        upgrade = starttls in ("1", "true", "yes")
        if upgrade and parts.scheme == "smtps":
            raise ConfigError(f"{SMTP_VARIABLE}: smtps:// is TLS already; drop ?starttls=1")
        if (parts.username or parts.password) and parts.scheme == "smtp" and not upgrade:
            raise ConfigError(
                f"{SMTP_VARIABLE} has a user name and password but no TLS: they would cross "
                "the network in clear; use smtps:// or add ?starttls=1"
            )
        return cls(
            host=parts.hostname,
            port=port or (465 if parts.scheme == "smtps" else 587 if upgrade else 25),
            tls=parts.scheme == "smtps",
            starttls=upgrade,
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
        )


SMTP_VARIABLE = "AI_CONSOLE_SMTP_URL"
# One plain address: no display name, group (":"), encoded word ("=?") or list.
_ADDRESS_PART = r"[^@\s<>,;:\"=?()\[\]]+"
EMAIL_ADDRESS = re.compile(rf"{_ADDRESS_PART}@{_ADDRESS_PART}\.{_ADDRESS_PART}")


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Immutable; build a new one to change anything."""

    database_url: str
    fernet_keys: tuple[str, ...] = ()
    env: str = "development"
    data_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "data")
    db_pool_size: int = 5
    db_max_overflow: int = 10
    # How long a router waits for PostgreSQL: to connect (whole seconds, libpq's minimum is 2)
    # and for one statement. A call waits at most their sum for the database, frozen or gone.
    db_connect_timeout_s: int = 2
    db_statement_timeout_s: float = 2.0
    # Where routers spool usage rows before the database has them; None: <data_dir>/spool.
    spool_dir: Path | None = None
    # Signs the console's sign-in cookie; "" means the development default (core.auth.cookie_key).
    cookie_key: str = field(default="", repr=False)
    # base_url hosts, IPs or CIDRs that may be private (core.providers.egress). A Settings built
    # directly (scripts, tests) gets the operator's AI_CONSOLE_BASE_URL_ALLOWLIST too, so the
    # egress policy is the same however the settings were made.
    base_url_allowlist: tuple[str, ...] = field(
        default_factory=lambda: allowlist_entries(os.environ.get(ALLOWLIST_VARIABLE, ""))
    )
    # The service a router's calls are for unless they name one (core/usage/attribution.py).
    service: str = ""
    # Raw usage rows older than this many days may be pruned (core/usage/retention.py); None
    # keeps them all.
    usage_retention_days: int | None = None
    # Alerts (core/alerts): the SMTP server for email alerts ("" = none; it may hold a
    # password), their From address, and how often a watcher looks for limits crossed.
    smtp_url: str = field(default="", repr=False)
    alert_from: str = ""
    alert_interval_s: float = 30.0

    def __post_init__(self) -> None:
        try:
            check_service(self.service, "AI_CONSOLE_SERVICE")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
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
        if self.db_connect_timeout_s < 2 or self.db_statement_timeout_s <= 0:
            raise ConfigError(
                "AI_CONSOLE_DB_CONNECT_TIMEOUT_S must be ≥ 2 (whole seconds) and "
                "AI_CONSOLE_DB_STATEMENT_TIMEOUT_S above 0"
            )
        if self.cookie_key and len(self.cookie_key) < MIN_COOKIE_KEY_LENGTH:
            raise ConfigError(
                f"AI_CONSOLE_COOKIE_KEY must be at least {MIN_COOKIE_KEY_LENGTH} characters; "
                "make one with `python -m core keys generate`"
            )
        for entry in self.base_url_allowlist:
            allowlist_entry(entry)
        if self.usage_retention_days is not None and (
            self.usage_retention_days < MIN_RETENTION_DAYS
        ):
            raise ConfigError(
                f"{RETENTION_VARIABLE} must be at least {MIN_RETENTION_DAYS} (days), not "
                f"{self.usage_retention_days}; leave it unset to keep every usage row"
            )
        if self.smtp_url:
            SmtpServer.parse(self.smtp_url)
            if not EMAIL_ADDRESS.fullmatch(self.alert_from):
                raise ConfigError(
                    "AI_CONSOLE_ALERT_FROM must be the address alert emails come from "
                    "(e.g. ai-console@example.com) when AI_CONSOLE_SMTP_URL is set"
                )
        if self.alert_interval_s <= 0:
            raise ConfigError("AI_CONSOLE_ALERT_INTERVAL_S must be a number of seconds above 0")

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def fernet_key_file(self) -> Path:
        """Where the embedded (development) key lives when AI_CONSOLE_FERNET_KEYS is unset."""
        return self.data_dir / "fernet.key"

    @property
    def db_timeouts(self) -> DbTimeouts:
        return DbTimeouts(self.db_connect_timeout_s, self.db_statement_timeout_s)

    @property
    def smtp(self) -> SmtpServer | None:
        """The SMTP server for alert emails, or None when AI_CONSOLE_SMTP_URL is unset."""
        return SmtpServer.parse(self.smtp_url) if self.smtp_url else None

    @property
    def usage_spool_dir(self) -> Path:
        """The usage spool's directory (AI_CONSOLE_SPOOL_DIR, else <data dir>/spool)."""
        return self.spool_dir or self.data_dir / "spool"

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
            db_connect_timeout_s=_int(env, "AI_CONSOLE_DB_CONNECT_TIMEOUT_S", 2),
            db_statement_timeout_s=_float(env, "AI_CONSOLE_DB_STATEMENT_TIMEOUT_S", 2.0),
            spool_dir=Path(spool)
            if (spool := env.get("AI_CONSOLE_SPOOL_DIR", "").strip())
            else None,
            cookie_key=env.get("AI_CONSOLE_COOKIE_KEY", "").strip(),
            base_url_allowlist=allowlist_entries(env.get(ALLOWLIST_VARIABLE, "")),
            service=env.get("AI_CONSOLE_SERVICE", "").strip(),
            usage_retention_days=_optional_int(env, RETENTION_VARIABLE),
            smtp_url=env.get(SMTP_VARIABLE, "").strip(),
            alert_from=env.get("AI_CONSOLE_ALERT_FROM", "").strip(),
            alert_interval_s=_float(env, "AI_CONSOLE_ALERT_INTERVAL_S", 30.0),
        )


def allowlist_entries(raw: str) -> tuple[str, ...]:
    """The entries of an AI_CONSOLE_BASE_URL_ALLOWLIST value, normalized; ConfigError on a bad one.

    Comma-separated host names, IP addresses or CIDRs; empty entries are ignored.
    """
    return tuple(allowlist_entry(part) for part in raw.split(",") if part.strip())


def allowlist_entry(entry: str) -> str:
    """One allowlist entry normalized (a lower-case name without a trailing dot, or an IP/CIDR)."""
    text = entry.strip().lower().rstrip(".")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    else:
        return str(network.network_address) if network.num_addresses == 1 else str(network)
    try:
        name = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        name = ""
    if not _HOST_NAME.fullmatch(name):
        raise ConfigError(
            f"{ALLOWLIST_VARIABLE}: {entry.strip()!r} is not a host name, IP address or CIDR; "
            "use e.g. 127.0.0.1,10.0.0.0/8,llm.internal"
        )
    return name


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return _number(env, name, default, int, "a whole number")


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    """A whole number, or None when the variable is unset or empty."""
    return _int(env, name, 0) if env.get(name, "").strip() else None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, float, "a number of seconds")


def _number(env: Mapping[str, str], name: str, default: _N, kind: type[_N], what: str) -> _N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, not {raw!r}") from None
