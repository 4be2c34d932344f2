"""Database models (SQLAlchemy 2.0, typed). Migrations in migrations/ create these tables.

`Mapped[X]` is NOT NULL and `Mapped[X | None]` is nullable. Every datetime is timezone-aware
UTC on the way in and out, on SQLite as well as PostgreSQL. Enumerated columns are plain strings
guarded by CHECK constraints (no native PostgreSQL enum types to migrate).
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class ProviderType(enum.StrEnum):
    GEMINI = "gemini"
    OPENAI = "openai"
    CLAUDE = "claude"


class TaskType(enum.StrEnum):
    EXTRACTION = "extraction"
    CV_DRAFT = "cv_draft"
    COVER_LETTER = "cover_letter"
    VALIDATION = "validation"


TASKS = tuple(task.value for task in TaskType)  # in the order the console lists them


class UsageStatus(enum.StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # the caller cancelled the call (or the process stopped it) mid-way


# Attempts whose latency is not a provider's answer time: refused by a limit before any call,
# or cut short by the caller. Latency figures leave them out.
UNMEASURED_STATUSES = (UsageStatus.REJECTED.value, UsageStatus.CANCELLED.value)


class UsageSource(enum.StrEnum):
    ROUTER = "router"  # a call routed to a stored provider config
    LEGACY_ENV = "legacy_env"  # no config stored yet: served from GEMINI_API_KEY etc.
    DEMO = "demo"  # sample rows from `python -m core demo-data`; `--purge` deletes them


class UserRole(enum.StrEnum):
    SUPER_ADMIN = "super_admin"
    ANALYST = "analyst"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime (core.models.utcnow)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# 64-bit ids where rows are many; SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def _one_of(column: str, enum_type: type[enum.StrEnum]) -> str:
    values = ", ".join(f"'{member.value}'" for member in enum_type)
    return f"{column} IN ({values})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONDocument}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_one_of("role", UserRole), name="role"),
        CheckConstraint("failed_logins >= 0", name="failed_logins_non_negative"),
        CheckConstraint("length(username) > 0", name="username_not_empty"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    totp_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    # Highest TOTP time step accepted so far: a code from that step or earlier is a replay.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Unused since sign-in throttles (SignInThrottle) replaced the per-account lock; kept because
    # dropping them would rebuild `users` on SQLite, firing the foreign keys that point at it.
    failed_logins: Mapped[int] = mapped_column(default=0, server_default="0")
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    # Console sessions and sign-in cookies that began before this instant are no longer valid
    # (set by logout, password change, MFA reset and disabling the account).
    sessions_revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class SetupToken(Base):
    """The one-time token that lets the first super-admin be created (first run only).

    Only a SHA-256 of the token is stored, so every replica can check it and nobody can read it
    back. `python -m core migrate` replaces it while no user exists; the setup deletes it.
    """

    __tablename__ = "setup_tokens"
    __table_args__ = (CheckConstraint("failed_attempts >= 0", name="failed_attempts_non_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    failed_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ThrottleScope(enum.StrEnum):
    ACCOUNT_ADDRESS = "account_address"  # wrong passwords for one username from one address
    ADDRESS = "address"  # wrong passwords for any username from one address
    CODE = "code"  # wrong TOTP codes for one account, from any address


class SignInThrottle(Base):
    """Failed sign-in attempts counted per scope and key, with the delay they impose
    (core/auth.py explains the rules). In the database, so it holds across replicas."""

    __tablename__ = "sign_in_throttles"
    __table_args__ = (
        CheckConstraint(_one_of("scope", ThrottleScope), name="scope"),
        CheckConstraint("failures >= 0", name="failures_non_negative"),
    )

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    # SHA-256 (hex) of the normalised username as typed, known or not; '' for the address scope.
    account_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The client's IP address; '' for the code scope.
    address: Mapped[str] = mapped_column(String(45), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    window_started_at: Mapped[datetime]
    last_failure_at: Mapped[datetime] = mapped_column(index=True)
    blocked_until: Mapped[datetime | None]


class ResumedSignIn(Base):
    """A sign-in cookie (user and issue time) that has restored a session at least once, so
    its first use is audited as a sign-in and later page loads are not."""

    __tablename__ = "resumed_sign_ins"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    issued_at: Mapped[datetime] = mapped_column(primary_key=True)
    first_resumed_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ProviderConfig(Base):
    __tablename__ = "ai_provider_configs"
    __table_args__ = (
        CheckConstraint(_one_of("provider_type", ProviderType), name="provider_type"),
        CheckConstraint("length(model_name) > 0", name="model_name_not_empty"),
        CheckConstraint("length(api_key_encrypted) > 0", name="api_key_not_empty"),
        CheckConstraint("priority >= 0", name="priority_non_negative"),
        CheckConstraint(
            "daily_token_limit IS NULL OR daily_token_limit >= 0", name="daily_limit_non_negative"
        ),
        CheckConstraint(
            "monthly_token_limit IS NULL OR monthly_token_limit >= 0",
            name="monthly_limit_non_negative",
        ),
        CheckConstraint(
            "daily_budget_micro_usd IS NULL OR daily_budget_micro_usd >= 0",
            name="daily_budget_non_negative",
        ),
        CheckConstraint(
            "monthly_budget_micro_usd IS NULL OR monthly_budget_micro_usd >= 0",
            name="monthly_budget_non_negative",
        ),
        CheckConstraint("version >= 1", name="version_positive"),
        # At most one default config: a partial unique index, enforced by the database itself.
        Index(
            "uq_ai_provider_configs_single_default",
            "is_default",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
        Index("ix_ai_provider_configs_active_priority", "is_active", "priority", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_type: Mapped[str] = mapped_column(String(16))
    api_key_encrypted: Mapped[str] = mapped_column(Text)
    key_last4: Mapped[str] = mapped_column(String(4))
    model_name: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    base_url: Mapped[str | None] = mapped_column(String(500))
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    is_default: Mapped[bool] = mapped_column(default=False, server_default=false())
    default_for_extraction: Mapped[bool] = mapped_column(default=False, server_default=false())
    default_for_cv_draft: Mapped[bool] = mapped_column(default=False, server_default=false())
    default_for_cover_letter: Mapped[bool] = mapped_column(default=False, server_default=false())
    default_for_validation: Mapped[bool] = mapped_column(default=False, server_default=false())
    priority: Mapped[int] = mapped_column(default=100, server_default="100")
    daily_token_limit: Mapped[int | None] = mapped_column(BigInteger)
    monthly_token_limit: Mapped[int | None] = mapped_column(BigInteger)
    # Dollar budgets in integer micro-dollars, like costs (NULL = none); daily_budget_usd and
    # monthly_budget_usd below read them as Decimal dollars.
    daily_budget_micro_usd: Mapped[int | None] = mapped_column(BigInteger)
    monthly_budget_micro_usd: Mapped[int | None] = mapped_column(BigInteger)
    last_tested_at: Mapped[datetime | None]
    last_test_success: Mapped[bool | None]
    last_test_message: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    version: Mapped[int] = mapped_column(default=1, server_default="1")

    # SQLAlchemy bumps `version` on every UPDATE and refuses (StaleDataError) when the row's
    # version moved since it was read: an edit made on stale data is refused, never merged.
    __mapper_args__ = {"version_id_col": version}

    def serves(self, task: TaskType | str) -> bool:
        """True when this config is flagged for `task` (not counting the is_default fallback)."""
        return bool(getattr(self, f"default_for_{TaskType(task).value}"))

    @property
    def daily_budget_usd(self) -> Decimal | None:
        return _dollars(self.daily_budget_micro_usd)

    @property
    def monthly_budget_usd(self) -> Decimal | None:
        return _dollars(self.monthly_budget_micro_usd)


def _dollars(micro: int | None) -> Decimal | None:
    return None if micro is None else Decimal(micro) / 1_000_000


class UsageLog(Base):
    __tablename__ = "ai_provider_usage_logs"
    __table_args__ = (
        CheckConstraint(_one_of("provider_type", ProviderType), name="provider_type"),
        CheckConstraint(_one_of("task_type", TaskType), name="task_type"),
        CheckConstraint(_one_of("status", UsageStatus), name="status"),
        CheckConstraint(_one_of("source", UsageSource), name="source"),
        CheckConstraint(
            "input_tokens >= 0 AND output_tokens >= 0 AND total_tokens >= 0",
            name="tokens_non_negative",
        ),
        CheckConstraint("cost_micro_usd IS NULL OR cost_micro_usd >= 0", name="cost_non_negative"),
        CheckConstraint("latency_ms >= 0", name="latency_non_negative"),
        CheckConstraint(
            "(cached_input_tokens IS NULL OR cached_input_tokens >= 0)"
            " AND (cache_write_tokens IS NULL OR cache_write_tokens >= 0)"
            " AND (reasoning_tokens IS NULL OR reasoning_tokens >= 0)",
            name="token_details_non_negative",
        ),
        # Analytics read time ranges, filtered by provider, task or config.
        Index("ix_ai_provider_usage_logs_provider_created", "provider_type", "created_at"),
        Index("ix_ai_provider_usage_logs_task_created", "task_type", "created_at"),
        Index("ix_ai_provider_usage_logs_config_created", "provider_config_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The calling service's own user id (not a console user): opaque, no foreign key.
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    # SET NULL keeps the history of a deleted config; provider_type/model_name stay on the row.
    provider_config_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_provider_configs.id", ondelete="SET NULL")
    )
    provider_type: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String(200))
    task_type: Mapped[str] = mapped_column(String(32))
    input_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    total_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    # Of input_tokens: read from and written to the provider's prompt cache; of output_tokens:
    # thinking. NULL on rows stored before they were recorded.
    cached_input_tokens: Mapped[int | None] = mapped_column()
    cache_write_tokens: Mapped[int | None] = mapped_column()
    reasoning_tokens: Mapped[int | None] = mapped_column()
    # Integer micro-dollars; NULL when the model cannot be priced (unknown is not free).
    cost_micro_usd: Mapped[int | None] = mapped_column(BigInteger)
    # What the prompt cache saved: the cost of the same tokens with none of them cached, less
    # cost_micro_usd (negative when cache writes cost more than reads saved); NULL when the
    # call used no cache or cannot be priced.
    cache_savings_micro_usd: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(default=0, server_default="0")
    source: Mapped[str] = mapped_column(String(16), default="router", server_default="router")
    # Who the call was for (core/usage/attribution.py): the calling service and its tags as
    # "key=value,..." sorted by key; '' for none (they are rollup keys, which take no NULL).
    service: Mapped[str] = mapped_column(String(64), default="", server_default="")
    tags: Mapped[str] = mapped_column(String(800), default="", server_default="")
    # The attempt's own id, made by the router before the row is spooled: a spool replayed
    # after a crash inserts each attempt once. NULL on rows from other writers (seed helper).
    attempt_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    # When the attempt started: a call counts in the day and month it began (as its quota does).
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )


class UsageRetention(Base):
    """One row: raw usage rows created before `pruned_before` (a UTC midnight) have been
    pruned (core/usage/retention.py). The rollup triggers do not subtract a deleted row older
    than it, so the rollups keep those days' sums; it only ever moves forward."""

    __tablename__ = "ai_provider_usage_retention"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    pruned_before: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class QuotaCounter(Base):
    """Tokens and micro-dollars used and reserved per config and UTC day (core/quota/ledger.py)."""

    __tablename__ = "ai_provider_quota_counters"
    __table_args__ = (
        CheckConstraint("used_tokens >= 0", name="used_non_negative"),
        CheckConstraint("reserved_tokens >= 0", name="reserved_non_negative"),
        CheckConstraint("used_micro_usd >= 0", name="used_micro_usd_non_negative"),
        CheckConstraint("reserved_micro_usd >= 0", name="reserved_micro_usd_non_negative"),
    )

    config_id: Mapped[int] = mapped_column(
        ForeignKey("ai_provider_configs.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    used_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    used_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class QuotaReservation(Base):
    """Tokens and micro-dollars held on a counter: by one in-flight call, or by a router's
    lease that its calls draw down (core/quota/leases.py). Expired holds are released by a
    sweep."""

    __tablename__ = "ai_provider_quota_reservations"
    # AUTOINCREMENT: SQLite would otherwise hand a deleted row's id to the next reservation, and
    # a late settlement of the old one (an overdue call, a swept lease) would act on the new.
    __table_args__ = (
        CheckConstraint("tokens >= 0", name="tokens_non_negative"),
        CheckConstraint("micro_usd >= 0", name="micro_usd_non_negative"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    config_id: Mapped[int] = mapped_column(
        ForeignKey("ai_provider_configs.id", ondelete="CASCADE"), index=True
    )
    day: Mapped[date]
    tokens: Mapped[int] = mapped_column(BigInteger)
    micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class AdminActionLog(Base):
    """Append-only: the initial migration installs triggers that refuse UPDATE and DELETE."""

    __tablename__ = "admin_action_logs"
    __table_args__ = (
        CheckConstraint("actor_id IS NOT NULL OR actor_label <> ''", name="actor_known"),
        Index("ix_admin_action_logs_actor_created", "actor_id", "created_at"),
        Index("ix_admin_action_logs_action_created", "action", "created_at"),
        Index("ix_admin_action_logs_label_created", "actor_label", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No ON DELETE action: users are disabled, never deleted, so their trail stays whole.
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_label: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str | None] = mapped_column(String(50))
    target_id: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )


# --- usage rollups (maintained by database triggers; see core/usage/rollup.py) ---------------

# Latency histogram: bucket k counts latencies with LATENCY_BUCKETS_MS[k] <= ms < [k + 1] (the
# last bucket is open-ended). From 50 ms to about two minutes each bound is 1.2 times the one
# before. The migration that installs the rollup triggers carries the same list: changing it
# needs a new migration that rebuilds the rollups.
LATENCY_BUCKETS_MS: tuple[int, ...] = (
    0, 10, 25, 50, 60, 72, 86, 104, 124, 149, 179, 215, 258, 310, 372, 446, 535, 642, 770, 924,
    1109, 1331, 1597, 1917, 2300, 2760, 3312, 3975, 4770, 5724, 6869, 8242, 9891, 11869, 14243,
    17091, 20509, 24611, 29533, 35440, 42528, 51034, 61240, 73489, 88186, 105824, 126988, 300000,
)  # fmt: skip
LATENCY_COLUMNS: tuple[str, ...] = tuple(f"lat_{k:02d}" for k in range(len(LATENCY_BUCKETS_MS)))


def _usage_rollup(name: str, period: Column[Any]) -> Table:
    """Sums of ai_provider_usage_logs per period and key. config_id 0 stands for "no config"
    (a legacy-env call, or a deleted config), so the key has no NULLs."""
    return Table(
        name,
        Base.metadata,
        period,
        Column("provider_type", String(16), primary_key=True),
        Column("config_id", Integer(), primary_key=True),
        Column("model_name", String(200), primary_key=True),
        Column("task_type", String(32), primary_key=True),
        Column("status", String(16), primary_key=True),
        Column("source", String(16), primary_key=True),
        Column("service", String(64), primary_key=True, server_default=""),
        Column("tags", String(800), primary_key=True, server_default=""),
        Column("calls", Integer(), nullable=False, server_default="0"),
        Column("priced_calls", Integer(), nullable=False, server_default="0"),  # cost not NULL
        Column("cost_micro_usd", BigInteger(), nullable=False, server_default="0"),
        Column("input_tokens", BigInteger(), nullable=False, server_default="0"),
        Column("output_tokens", BigInteger(), nullable=False, server_default="0"),
        Column("total_tokens", BigInteger(), nullable=False, server_default="0"),
        Column("latency_ms_sum", BigInteger(), nullable=False, server_default="0"),
        *(Column(name, Integer(), nullable=False, server_default="0") for name in LATENCY_COLUMNS),
        Column("cached_input_tokens", BigInteger(), nullable=False, server_default="0"),
        Column("cache_write_tokens", BigInteger(), nullable=False, server_default="0"),
        Column("reasoning_tokens", BigInteger(), nullable=False, server_default="0"),
        Column("cache_savings_micro_usd", BigInteger(), nullable=False, server_default="0"),
    )


usage_hourly = _usage_rollup(
    "ai_provider_usage_hourly", Column("hour", UTCDateTime(), primary_key=True)
)
usage_daily = _usage_rollup("ai_provider_usage_daily", Column("day", Date(), primary_key=True))


# --- alerts (core/alerts) ---------------------------------------------------------------------


class AlertChannel(enum.StrEnum):
    WEBHOOK = "webhook"  # a generic JSON body
    SLACK = "slack"  # Slack's incoming-webhook shape ({"text": ...})
    EMAIL = "email"  # through AI_CONSOLE_SMTP_URL


class AlertKind(enum.StrEnum):
    """What an alert watches: a limit (unit and period) or a config's recent error rate."""

    TOKENS_DAY = "tokens_day"
    TOKENS_MONTH = "tokens_month"
    USD_DAY = "usd_day"
    USD_MONTH = "usd_month"
    ERROR_RATE = "error_rate"


LIMIT_KINDS = tuple(kind.value for kind in AlertKind if kind is not AlertKind.ERROR_RATE)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # not sent yet: due at next_attempt_at
    SENT = "sent"
    FAILED = "failed"  # every attempt failed; nothing more is tried
    # Crossed in the same round as a higher threshold of the same limit and period: that
    # alert says so, and this one is never sent (three messages at once would be noise).
    SUPERSEDED = "superseded"


class AlertRule(Base):
    """Where to send which alerts: a target (webhook, Slack or email), the configs it is about
    (one, or every config when config_id is NULL), the limits it watches with their thresholds,
    and optionally an error-rate level. The target is encrypted (a Slack URL is a credential);
    `target_hint` is what the console shows of it."""

    __tablename__ = "alert_rules"
    __table_args__ = (
        CheckConstraint(_one_of("channel", AlertChannel), name="channel"),
        CheckConstraint("length(target_encrypted) > 0", name="target_not_empty"),
        CheckConstraint(
            "error_rate_percent IS NULL OR (error_rate_percent > 0 AND error_rate_percent <= 100)",
            name="error_rate_percent_range",
        ),
        CheckConstraint("error_min_calls >= 1", name="error_min_calls_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    target_encrypted: Mapped[str] = mapped_column(Text)
    target_hint: Mapped[str] = mapped_column(String(200))
    config_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_provider_configs.id", ondelete="CASCADE"), index=True
    )
    # Comma-separated AlertKind values of the limits watched ('' for none), and the percentages
    # of a limit at which to send ("80,95,100").
    limit_kinds: Mapped[str] = mapped_column(String(100), default="", server_default="")
    thresholds: Mapped[str] = mapped_column(String(100), default="", server_default="")
    # Send when a config's calls of the last 15 minutes failed more often than this (NULL: off),
    # counted only once there were at least error_min_calls of them.
    error_rate_percent: Mapped[int | None] = mapped_column()
    error_min_calls: Mapped[int] = mapped_column(default=20, server_default="20")
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class AlertDelivery(Base):
    """One alert to send: a rule's threshold crossed by one config in one period. The unique
    key is the claim that makes it once per threshold per period, however many watchers run;
    `claimed_until` lets one of them send it at a time (core/alerts/courier.py)."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        CheckConstraint(_one_of("kind", AlertKind), name="kind"),
        CheckConstraint(_one_of("status", DeliveryStatus), name="status"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index(
            "uq_alert_deliveries_once",
            "rule_id",
            "config_id",
            "kind",
            "period",
            "threshold",
            unique=True,
        ),
        Index("ix_alert_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    # The config it is about; no foreign key, so the history outlives a deleted config.
    config_id: Mapped[int] = mapped_column()
    kind: Mapped[str] = mapped_column(String(16))
    # "2026-12-07" (day), "2026-12" (month), "2026-12-07T09:45" (an error-rate quarter hour).
    period: Mapped[str] = mapped_column(String(20))
    threshold: Mapped[int] = mapped_column()  # percent of the limit, or the error-rate level
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what is sent; never a secret
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    # Which take of it the claim is (a random id per attempt): only that take records the
    # outcome, so a watcher whose claim lapsed cannot overwrite another's.
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    sent_at: Mapped[datetime | None]
