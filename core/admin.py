"""The provider-config service: the one way the console pages and the CLI change providers.

Every call checks the actor's role in the database (core.access), and every change also needs a
fresh second factor (step-up) unless the actor is the operator at the shell. Field values are
validated with messages that name the field; credentials are proven against the provider before
a key is saved; keys are encrypted before they reach the database and only `…last4` comes back
out. Edits carry the version they were made from, and an edit made on stale data is refused,
never merged. Every change writes an audit row, without secrets.

Callers get `ProviderView`s, never the ORM rows (which hold the ciphertext).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from core import audit
from core.access import require_role, require_step_up
from core.audit import Actor
from core.crypto import DecryptionError, SecretBox
from core.db import session_scope
from core.models import ProviderConfig, ProviderType, TaskType, UserRole, utcnow
from core.providers import CredentialCheck, ProviderFactory

T = TypeVar("T")
Validator = Callable[[str, str, str | None, str | None], Awaitable[CredentialCheck]]

ADMIN = UserRole.SUPER_ADMIN
TASKS = tuple(task.value for task in TaskType)
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_URL = 500


class AdminError(Exception):
    """Base of the service's refusals; the message is meant for the person who asked."""


class ValidationFailed(AdminError):
    """One or more fields are invalid; `errors` maps each field to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{name}: {text}" for name, text in self.errors.items()))


class CredentialsRejected(AdminError):
    """The provider refused the key (or model); nothing was saved."""

    def __init__(self, check: CredentialCheck) -> None:
        self.check = check
        super().__init__(f"Not saved: {check.message}")


class StaleEdit(AdminError):
    """Someone saved this config after the editor loaded it."""


class NotFound(AdminError):
    """No config with that id (deleted meanwhile?)."""


@dataclass(frozen=True)
class ProviderInput:
    """What a form or the command line hands in. On update, an empty api_key keeps the key."""

    provider_type: str
    model_name: str
    display_name: str
    api_key: str | None = None
    description: str = ""
    base_url: str | None = None
    tasks: Collection[str] = ()
    priority: Any = 100
    daily_token_limit: Any = None
    monthly_token_limit: Any = None
    is_active: bool = True
    is_default: bool = False


@dataclass(frozen=True)
class ProviderView:
    """A config as pages and the CLI see it: no ciphertext, the key only as its last four."""

    id: int
    provider_type: str
    model_name: str
    display_name: str
    description: str
    base_url: str | None
    tasks: tuple[str, ...]
    priority: int
    daily_token_limit: int | None
    monthly_token_limit: int | None
    is_active: bool
    is_default: bool
    key_last4: str
    last_tested_at: datetime | None
    last_test_success: bool | None
    last_test_message: str | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def masked_key(self) -> str:
        return f"…{self.key_last4}"

    @classmethod
    def of(cls, row: ProviderConfig) -> ProviderView:
        names = {f.name for f in fields(cls)} - {"tasks"}
        values = {name: getattr(row, name) for name in names}
        return cls(**values, tasks=tuple(task for task in TASKS if row.serves(task)))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for `providers list --json`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["tasks"] = list(self.tasks)
        return out


class ProviderAdmin:
    """Provider configs for one process: give it the session factory and the SecretBox."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        cipher: SecretBox,
        validator: Validator | None = None,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._validate = validator or _validate_with_factory

    # --- reading ---

    def list(self, actor: Actor) -> list[ProviderView]:
        """Every config, by priority then id. Analysts may read (no secrets are in a view)."""
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN, UserRole.ANALYST)
            rows = session.scalars(
                select(ProviderConfig).order_by(ProviderConfig.priority, ProviderConfig.id)
            )
            return [ProviderView.of(row) for row in rows]

    def get(self, actor: Actor, config_id: int) -> ProviderView:
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN, UserRole.ANALYST)
            return ProviderView.of(_load(session, config_id))

    def stored_key_matches(self, config_id: int, key: str) -> bool:
        """Whether config `config_id` holds `key` (for the seed command's duplicate check)."""
        with session_scope(self._sessions) as session:
            row = _load(session, config_id)
            try:
                return self._cipher.decrypt(row.api_key_encrypted) == key
            except DecryptionError:
                return False

    # --- changing ---

    def create(self, actor: Actor, data: ProviderInput, *, validate: bool = True) -> ProviderView:
        """Save a new config after proving its credentials (unless `validate` is False)."""
        clean = _clean(data, creating=True)
        key = clean.pop("api_key")
        with session_scope(self._sessions) as session:
            self._authorize(session, actor)  # before anything reaches the provider
        check = self._check(clean, key) if validate else None
        with session_scope(self._sessions) as session:
            row = ProviderConfig(
                **clean,
                api_key_encrypted=self._cipher.encrypt(key),
                key_last4=key[-4:],
                created_by_id=actor.user_id,
            )
            _record_test(row, check)
            if row.is_default:
                _clear_default(session)
            session.add(row)
            session.flush()
            audit.record(
                session,
                actor,
                "provider.create",
                target_type="provider_config",
                target_id=row.id,
                details=_describe(row) | {"validated": validate},
            )
            return ProviderView.of(row)

    def update(
        self, actor: Actor, config_id: int, data: ProviderInput, expected_version: int
    ) -> ProviderView:
        """Apply an edit made on `expected_version`; refuse it if the config moved on since.

        A new key, model, provider or base URL is proven against the provider first; that call
        happens outside any database transaction, and the version is checked again after it.
        """
        clean = _clean(data, creating=False)
        key = clean.pop("api_key")
        with session_scope(self._sessions) as session:
            self._authorize(session, actor)
            row = _load(session, config_id)
            _check_version(row, expected_version)
            if key is None and clean["provider_type"] != row.provider_type:
                raise ValidationFailed({"api_key": "a new key is needed to change the provider"})
            reaches_provider = ("provider_type", "model_name", "base_url")
            needs_check = key is not None or any(
                clean[name] != getattr(row, name) for name in reaches_provider
            )
            test_key = key if key is not None else self._decrypt(row) if needs_check else None
        check = self._check(clean, test_key) if test_key is not None else None

        with session_scope(self._sessions) as session:
            row = _load(session, config_id)
            _check_version(row, expected_version)
            before = _describe(row)
            for name, value in clean.items():
                setattr(row, name, value)
            if key is not None:
                row.api_key_encrypted = self._cipher.encrypt(key)
                row.key_last4 = key[-4:]
            _record_test(row, check)
            if row.is_default:
                _clear_default(session, keep=row.id)
            after = _describe(row)
            changes = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
            try:
                session.flush()
            except StaleDataError:
                raise _stale(row.display_name) from None
            audit.record(
                session,
                actor,
                "provider.update",
                target_type="provider_config",
                target_id=row.id,
                details={"changes": changes, "key_replaced": key is not None},
            )
            return ProviderView.of(row)

    def set_active(self, actor: Actor, config_id: int, active: bool) -> ProviderView:
        """The list page's Activate/Deactivate quick action."""
        with session_scope(self._sessions) as session:
            self._authorize(session, actor)
            row = _load(session, config_id)
            if row.is_active != active:
                row.is_active = active
                session.flush()
                action = "provider.activate" if active else "provider.deactivate"
                audit.record(
                    session,
                    actor,
                    action,
                    target_type="provider_config",
                    target_id=row.id,
                    details={"display_name": row.display_name},
                )
            return ProviderView.of(row)

    def delete(self, actor: Actor, config_id: int) -> ProviderView:
        """Remove a config; its usage history stays (with the config reference cleared)."""
        with session_scope(self._sessions) as session:
            self._authorize(session, actor)
            row = _load(session, config_id)
            view = ProviderView.of(row)
            orphaned = _tasks_only_served_by(session, row)
            session.delete(row)
            audit.record(
                session,
                actor,
                "provider.delete",
                target_type="provider_config",
                target_id=config_id,
                details=_describe(row) | {"left_unserved": orphaned},
            )
            return view

    def tasks_only_served_by(self, actor: Actor, config_id: int) -> list[str]:
        """Tasks no other active config would serve if this one went (for delete warnings)."""
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN)
            return _tasks_only_served_by(session, _load(session, config_id))

    # --- credential tests ---

    def test(self, actor: Actor, config_id: int) -> CredentialCheck:
        """Test a saved config's stored key against its model, and record the outcome.

        Recording a test is not an edit: it leaves `version` alone, so open edit forms stay valid.
        """
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN)
            row = _load(session, config_id)
            target = (row.provider_type, row.base_url, row.model_name)
            try:
                key: str | None = self._decrypt(row)
            except AdminError as exc:
                key, check = None, CredentialCheck(False, str(exc), 0)
        if key is not None:
            check = _run(self._validate(target[0], key, target[1], target[2]))
        with session_scope(self._sessions) as session:
            session.execute(
                ProviderConfig.__table__.update()
                .where(ProviderConfig.id == config_id)
                .values(
                    last_tested_at=utcnow(),
                    last_test_success=check.ok,
                    last_test_message=check.message,
                    updated_at=ProviderConfig.updated_at,
                )
            )
            audit.record(
                session,
                actor,
                "provider.test",
                target_type="provider_config",
                target_id=config_id,
                details={"ok": check.ok, "latency_ms": check.latency_ms},
            )
        return check

    def test_new_key(
        self,
        actor: Actor,
        provider_type: str,
        api_key: str,
        model_name: str,
        base_url: str | None = None,
    ) -> CredentialCheck:
        """Test credentials typed into a form before saving (needs step-up: a new key)."""
        clean = _clean(
            ProviderInput(provider_type, model_name, "test", api_key=api_key, base_url=base_url),
            creating=True,
        )
        with session_scope(self._sessions) as session:
            self._authorize(session, actor)
        return _run(
            self._validate(
                clean["provider_type"], clean["api_key"], clean["base_url"], clean["model_name"]
            )
        )

    # --- helpers ---

    def _authorize(self, session: Session, actor: Actor) -> None:
        require_role(session, actor, ADMIN)
        require_step_up(actor)

    def _check(self, clean: Mapping[str, Any], key: str) -> CredentialCheck:
        check = _run(
            self._validate(clean["provider_type"], key, clean["base_url"], clean["model_name"])
        )
        if not check.ok:
            raise CredentialsRejected(check)
        return check

    def _decrypt(self, row: ProviderConfig) -> str:
        try:
            return self._cipher.decrypt(row.api_key_encrypted)
        except DecryptionError:
            raise AdminError(
                f"The stored key of {row.display_name!r} cannot be decrypted with the configured "
                "AI_CONSOLE_FERNET_KEYS: enter the key again, or restore the old encryption key."
            ) from None


async def _validate_with_factory(
    provider_type: str, api_key: str, base_url: str | None, model_name: str | None
) -> CredentialCheck:
    return await ProviderFactory.validate_credentials(provider_type, api_key, base_url, model_name)


def _run(awaitable: Awaitable[T]) -> T:
    """Run a coroutine from synchronous code (Streamlit script thread, CLI), on a worker thread
    when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(awaitable)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, awaitable).result()  # type: ignore[arg-type]


def _load(session: Session, config_id: int) -> ProviderConfig:
    row = session.get(ProviderConfig, config_id)
    if row is None:
        raise NotFound(f"No provider config {config_id} (was it deleted?)")
    return row


def _check_version(row: ProviderConfig, expected: int) -> None:
    if row.version != expected:
        raise _stale(row.display_name)


def _stale(name: str) -> StaleEdit:
    return StaleEdit(
        f"{name!r} was changed by someone else after you opened it; nothing was saved. "
        "Reload to see their changes, then make yours again."
    )


def _clear_default(session: Session, keep: int | None = None) -> None:
    for other in session.scalars(select(ProviderConfig).where(ProviderConfig.is_default)):
        if other.id != keep:
            other.is_default = False
    session.flush()  # before the new default is written: the database allows only one


def _record_test(row: ProviderConfig, check: CredentialCheck | None) -> None:
    if check is not None:
        row.last_tested_at = utcnow()
        row.last_test_success = check.ok
        row.last_test_message = check.message


def _tasks_only_served_by(session: Session, row: ProviderConfig) -> list[str]:
    others = session.scalars(
        select(ProviderConfig).where(ProviderConfig.is_active, ProviderConfig.id != row.id)
    ).all()
    fallback_default = any(other.is_default for other in others)
    return [
        task
        for task in TASKS
        if (row.serves(task) or row.is_default)
        and not fallback_default
        and not any(other.serves(task) for other in others)
    ]


def _describe(row: ProviderConfig) -> dict[str, Any]:
    """Audit-safe facts about a config (never the key, only its last four)."""
    return {
        "display_name": row.display_name,
        "provider_type": row.provider_type,
        "model_name": row.model_name,
        "base_url": _without_credentials(row.base_url),
        "tasks": [task for task in TASKS if row.serves(task)],
        "priority": row.priority,
        "daily_token_limit": row.daily_token_limit,
        "monthly_token_limit": row.monthly_token_limit,
        "is_active": row.is_active,
        "is_default": row.is_default,
        "key_last4": row.key_last4,
    }


def _without_credentials(url: str | None) -> str | None:
    if not url:
        return url
    parts = urlsplit(url)
    return parts._replace(netloc=parts.hostname or "").geturl() if parts.password else url


# --- field validation ---------------------------------------------------------------------------


def check_fields(data: ProviderInput, *, creating: bool) -> None:
    """Raise ValidationFailed naming every bad field (forms call it before asking for a code)."""
    _clean(data, creating=creating)


def _clean(data: ProviderInput, *, creating: bool) -> dict[str, Any]:
    """Normalised column values, or ValidationFailed naming every bad field."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}

    kind = str(data.provider_type or "").strip().lower()
    if kind not in {t.value for t in ProviderType}:
        errors["provider_type"] = (
            f"unknown provider type {data.provider_type!r}: use gemini, openai or claude"
        )
    out["provider_type"] = kind

    for name, limit in (("model_name", MAX_NAME), ("display_name", MAX_NAME)):
        value = str(getattr(data, name) or "").strip()
        if not value:
            errors[name] = "must not be empty"
        elif len(value) > limit:
            errors[name] = f"must be at most {limit} characters"
        out[name] = value

    description = str(data.description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = f"must be at most {MAX_DESCRIPTION} characters"
    out["description"] = description

    key = (data.api_key or "").strip()
    if not key:
        if creating:
            errors["api_key"] = "must not be empty"
        out["api_key"] = None
    elif any(ch.isspace() for ch in key) or len(key) < 8:
        errors["api_key"] = "does not look like an API key (no spaces, at least 8 characters)"
    else:
        out["api_key"] = key

    out["base_url"] = _clean_url(data.base_url, errors)

    tasks = {str(task).strip() for task in data.tasks if str(task).strip()}
    if unknown := sorted(tasks - set(TASKS)):
        errors["tasks"] = f"unknown task {', '.join(unknown)}: use {', '.join(TASKS)}"
    for task in TASKS:
        out[f"default_for_{task}"] = task in tasks

    out["priority"] = _whole(data.priority, "priority", errors, allow_none=False)
    out["daily_token_limit"] = _whole(data.daily_token_limit, "daily_token_limit", errors)
    out["monthly_token_limit"] = _whole(data.monthly_token_limit, "monthly_token_limit", errors)
    out["is_active"] = bool(data.is_active)
    out["is_default"] = bool(data.is_default)

    if errors:
        raise ValidationFailed(errors)
    return out


def _clean_url(raw: str | None, errors: dict[str, str]) -> str | None:
    url = (raw or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors["base_url"] = "must be an http:// or https:// URL with a host"
    elif parts.username or parts.password:
        errors["base_url"] = "must not contain credentials; put the key in the API key field"
    elif len(url) > MAX_URL:
        errors["base_url"] = f"must be at most {MAX_URL} characters"
    return url.rstrip("/")


def _whole(value: Any, name: str, errors: dict[str, str], allow_none: bool = True) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if not allow_none:
            errors[name] = "must be given"
        return None
    if isinstance(value, bool):
        errors[name] = "must be a whole number"
        return None
    if isinstance(value, float):
        if not value.is_integer():
            errors[name] = "must be a whole number"
            return None
        value = int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        if not text.lstrip("-").isdigit():
            errors[name] = "must be a whole number"
            return None
        value = int(text)
    if not isinstance(value, int):
        errors[name] = "must be a whole number"
        return None
    if value < 0:
        errors[name] = "must not be negative"
        return None
    return value
