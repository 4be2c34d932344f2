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

import functools
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from core import audit
from core.access import Actor, require_role, require_step_up
from core.admin.credentials import (
    CredentialsRejected,
    Validator,
    audit_test,
    record_test,
    run_blocking,
    target_host,
    validate_with_factory,
)
from core.admin.validation import (
    AdminError,
    ProviderInput,
    ValidationFailed,
    clean,
)
from core.admin.views import ProviderView, describe
from core.crypto import DecryptionError, SecretBox
from core.db import session_scope
from core.models import TASKS, ProviderConfig, UserRole, utcnow
from core.providers import CredentialCheck
from core.providers.egress import Allowlist
from core.quota.forecast import Forecast, forecasts
from core.routing.candidates import candidate_from, serving_order

ADMIN = UserRole.SUPER_ADMIN


# Fields whose change points the stored key at another endpoint: the key must come again.
KEY_BOUND_FIELDS = ("provider_type", "base_url")


class StaleEdit(AdminError):
    """Someone saved this config after the editor loaded it."""


class NotFound(AdminError):
    """No config with that id (deleted meanwhile?)."""


class ProviderAdmin:
    """Provider configs for one process: give it the session factory and the SecretBox.

    `allowlist` names the hosts a base_url may point at although they are private or loopback
    (AI_CONSOLE_BASE_URL_ALLOWLIST when None).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        cipher: SecretBox,
        validator: Validator | None = None,
        allowlist: Allowlist | None = None,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._validate = validator or functools.partial(validate_with_factory, allowlist=allowlist)
        self._allowlist = allowlist

    # --- reading ---

    def list(self, actor: Actor) -> list[ProviderView]:
        """Every config, by priority then id. Analysts may read (no secrets are in a view)."""
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN, UserRole.ANALYST)
            rows = session.scalars(
                select(ProviderConfig).order_by(ProviderConfig.priority, ProviderConfig.id)
            )
            return [ProviderView.of(row) for row in rows]

    def outlook(self, actor: Actor, now: datetime) -> dict[int, list[Forecast]]:
        """Each limited config's forecasts: when, at the last 7 days' rate, its token limits
        and dollar budgets will be reached (core/quota/forecast.py), by config id."""
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN, UserRole.ANALYST)
            return forecasts(session, session.scalars(select(ProviderConfig)), now)

    def get(self, actor: Actor, config_id: int) -> ProviderView:
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN, UserRole.ANALYST)
            return ProviderView.of(_load(session, config_id))

    def stored_key_matches(self, actor: Actor, config_id: int, key: str) -> bool:
        """Whether config `config_id` holds `key` (for the seed command's duplicate check)."""
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN)
            row = _load(session, config_id)
            try:
                return self._cipher.decrypt(row.api_key_encrypted) == key
            except DecryptionError:
                return False

    # --- changing ---

    def create(self, actor: Actor, data: ProviderInput, *, validate: bool = True) -> ProviderView:
        """Save a new config after proving its credentials (unless `validate` is False)."""
        with self._refusals(actor, "provider.create", None):
            with session_scope(self._sessions) as session:
                self._authorize(session, actor)  # before anything is looked up or sent
            clean = self._fields(data, creating=True)
            key = clean.pop("api_key")
            check = self._check(actor, "create", None, clean, key) if validate else None
            with session_scope(self._sessions) as session:
                row = ProviderConfig(
                    **clean,
                    api_key_encrypted=self._cipher.encrypt(key),
                    key_last4=key[-4:],
                    created_by_id=actor.user_id,
                )
                record_test(row, check)
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
                    details=describe(row) | {"validated": validate},
                )
                return ProviderView.of(row)

    def update(
        self,
        actor: Actor,
        config_id: int,
        data: ProviderInput,
        expected_version: int,
        *,
        validate: bool = True,
    ) -> ProviderView:
        """Apply an edit made on `expected_version`; refuse it if the config moved on since.

        A stored key is bound to the endpoint it was entered for: an edit that changes the
        provider type or the base URL must bring the key again, or it is refused before anything
        is sent anywhere. A new key or model is proven against the provider first; that call
        happens outside any database transaction, and the version is checked again after it.
        `validate=False` (the CLI's --skip-validation) saves without that test.
        """
        with self._refusals(actor, "provider.update", config_id):
            with session_scope(self._sessions) as session:
                self._authorize(session, actor)
            clean = self._fields(data, creating=False)
            key = clean.pop("api_key")
            test_key = self._key_to_test(config_id, expected_version, clean, key, validate)
            check = (
                self._check(actor, "update", config_id, clean, test_key)
                if test_key is not None
                else None
            )

            with session_scope(self._sessions) as session:
                row = _load(session, config_id)
                _check_version(row, expected_version)
                before = describe(row)
                for name, value in clean.items():
                    setattr(row, name, value)
                if key is not None:
                    row.api_key_encrypted = self._cipher.encrypt(key)
                    row.key_last4 = key[-4:]
                record_test(row, check)
                if row.is_default:
                    _clear_default(session, keep=row.id)
                after = describe(row)
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
        action = "provider.activate" if active else "provider.deactivate"
        with self._refusals(actor, action, config_id), session_scope(self._sessions) as session:
            self._authorize(session, actor)
            row = _load(session, config_id)
            if row.is_active != active:
                row.is_active = active
                session.flush()
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
        with (
            self._refusals(actor, "provider.delete", config_id),
            session_scope(self._sessions) as session,
        ):
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
                details=describe(row) | {"left_unserved": orphaned},
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

        The key goes to the base URL it was saved with, and nowhere else. Recording a test is
        not an edit: it leaves `version` alone, so open edit forms stay valid.
        """
        with session_scope(self._sessions) as session:
            require_role(session, actor, ADMIN)
            row = _load(session, config_id)
            target = {n: getattr(row, n) for n in ("provider_type", "base_url", "model_name")}
            try:
                key: str | None = self._decrypt(row)
            except AdminError as exc:
                key, check = None, CredentialCheck(False, str(exc), 0)
        if key is not None:
            check = self._probe(target, key)
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
            audit_test(session, actor, "saved", config_id, target, check)
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
        with self._refusals(actor, "provider.test", None):
            with session_scope(self._sessions) as session:
                self._authorize(session, actor)
            clean = self._fields(
                ProviderInput(
                    provider_type, model_name, "test", api_key=api_key, base_url=base_url
                ),
                creating=True,
            )
            check = self._probe(clean, clean["api_key"])
            with session_scope(self._sessions) as session:
                audit_test(session, actor, "form", None, clean, check)
            return check

    # --- helpers ---

    def _key_to_test(
        self,
        config_id: int,
        expected_version: int,
        clean: Mapping[str, Any],
        key: str | None,
        validate: bool,
    ) -> str | None:
        """The key an edit must be proven with (None: no test), or refuse an edit that would
        send the stored key to an endpoint it was not entered for."""
        with session_scope(self._sessions) as session:
            row = _load(session, config_id)
            _check_version(row, expected_version)
            moved = [name for name in KEY_BOUND_FIELDS if clean[name] != getattr(row, name)]
            if key is None and moved:
                raise ValidationFailed({"api_key": _key_needed(moved, row)})
            if key is not None or not validate:
                return key if validate else None
            return self._decrypt(row) if clean["model_name"] != row.model_name else None

    def _authorize(self, session: Session, actor: Actor) -> None:
        require_role(session, actor, ADMIN)
        require_step_up(actor)

    def _fields(self, data: ProviderInput, *, creating: bool) -> dict[str, Any]:
        return clean(data, creating=creating, allowlist=self._allowlist)

    def _probe(self, target: Mapping[str, Any], key: str) -> CredentialCheck:
        """One credential test against `target`'s endpoint (nothing is recorded)."""
        return run_blocking(
            self._validate(target["provider_type"], key, target["base_url"], target["model_name"])
        )

    def _check(
        self,
        actor: Actor,
        context: str,
        config_id: int | None,
        clean: Mapping[str, Any],
        key: str,
    ) -> CredentialCheck:
        """Prove `key` before a save; the test is audited whatever it says."""
        check = self._probe(clean, key)
        with session_scope(self._sessions) as session:
            audit_test(session, actor, context, config_id, clean, check)
        if not check.ok:
            raise CredentialsRejected(check)
        return check

    @contextmanager
    def _refusals(self, actor: Actor, action: str, config_id: int | None) -> Iterator[None]:
        """Audit a refused change (bad fields, a stale edit, a rejected key) in a transaction of
        its own, since the change's own transaction rolls back. Permission refusals are audited
        by core.access; a pending step-up is not a refusal."""
        try:
            yield
        except AdminError as exc:
            details: dict[str, Any] = {"reason": type(exc).__name__, "message": str(exc)[:500]}
            if isinstance(exc, ValidationFailed):
                details["fields"] = sorted(exc.errors)
            with session_scope(self._sessions) as session:
                audit.record(
                    session,
                    actor,
                    f"{action}_refused",
                    target_type="provider_config",
                    target_id=config_id,
                    details=details,
                )
            raise

    def _decrypt(self, row: ProviderConfig) -> str:
        try:
            return self._cipher.decrypt(row.api_key_encrypted)
        except DecryptionError:
            raise AdminError(
                f"The stored key of {row.display_name!r} cannot be decrypted with the configured "
                "AI_CONSOLE_FERNET_KEYS: enter the key again, or restore the old encryption key."
            ) from None


def _key_needed(moved: Collection[str], row: ProviderConfig) -> str:
    what = " and ".join({"provider_type": "provider", "base_url": "base URL"}[n] for n in moved)
    return (
        f"paste the API key again to change the {what}: the stored key …{row.key_last4} was "
        f"entered for {target_host(row.provider_type, row.base_url)} and is sent nowhere else"
    )


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


def _tasks_only_served_by(session: Session, row: ProviderConfig) -> list[str]:
    others = session.scalars(select(ProviderConfig).where(ProviderConfig.id != row.id))
    rest = [candidate_from(other) for other in others]
    mine = [candidate_from(row)]
    return [
        task
        for task in TASKS
        if serving_order(task, mine, inactive=True) and not serving_order(task, rest)
    ]
