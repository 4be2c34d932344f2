"""Managing console accounts: list, add, change role, reset MFA, unlock, disable and enable.

The Users page and `python -m core users add` both call these. Each function checks the actor's
role itself (core.access), and every change also needs a fresh TOTP code (step-up) and writes an
audit row. The last active super-admin can be neither disabled nor demoted, so the console can
always be administered. Accounts are never deleted: the audit trail keeps pointing at them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit
from core.access import PermissionDenied, require_role, require_step_up
from core.audit import Actor
from core.auth import AuthError, check_new_password, hash_password, normalize_username
from core.models import SetupToken, User, UserRole, utcnow

ADMIN = UserRole.SUPER_ADMIN


@dataclass(frozen=True)
class UserView:
    """What the Users page shows of an account (no hash, no secret)."""

    id: int
    username: str
    display_name: str
    email: str | None
    role: str
    is_active: bool
    mfa_enrolled: bool
    locked_until: datetime | None
    failed_logins: int
    last_login_at: datetime | None
    created_at: datetime

    def is_locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and self.locked_until > (now or utcnow())

    def status(self, now: datetime | None = None) -> str:
        if not self.is_active:
            return "disabled"
        return "locked" if self.is_locked(now) else "active"

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            role=user.role,
            is_active=user.is_active,
            mfa_enrolled=user.totp_secret_encrypted is not None,
            locked_until=user.locked_until,
            failed_logins=user.failed_logins,
            last_login_at=user.last_login_at,
            created_at=user.created_at,
        )


def list_users(session: Session, actor: Actor) -> list[UserView]:
    """Every account, by username (super-admins only)."""
    require_role(session, actor, ADMIN)
    return [UserView.of(u) for u in session.scalars(select(User).order_by(User.username))]


def create_user(
    session: Session,
    actor: Actor,
    username: str,
    password: str,
    role: UserRole | str,
    display_name: str = "",
    email: str | None = None,
) -> UserView:
    """Add an account with an initial password; AuthError says what to fix in the input."""
    _guard(session, actor)
    name = normalize_username(username)
    role = _role(role)
    check_new_password(password, name)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise AuthError(f"The username {name!r} is taken.")
    user = User(
        username=name,
        display_name=display_name.strip(),
        email=(email or "").strip() or None,
        password_hash=hash_password(password),
        role=role.value,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # created concurrently by someone else
        raise AuthError(f"The username {name!r} is taken.") from None
    session.execute(delete(SetupToken))  # a first user made here makes the setup token moot
    _record(session, actor, "user.created", user.id, name, {"role": role.value})
    return UserView.of(user)


def change_role(session: Session, actor: Actor, user_id: int, role: UserRole | str) -> UserView:
    """Give an account another role; the last active super-admin keeps theirs."""
    _guard(session, actor)
    user = _target(session, actor, user_id, "change your own role")
    role = _role(role)
    if user.role == role.value:
        return UserView.of(user)
    if user.role == ADMIN.value and user.is_active:
        _keep_a_super_admin(session, user, "demote")
    before, user.role = user.role, role.value
    _record(
        session,
        actor,
        "user.role_changed",
        user.id,
        user.username,
        {"from": before, "to": role.value},
    )
    return UserView.of(user)


def set_active(session: Session, actor: Actor, user_id: int, active: bool) -> UserView:
    """Disable (every session ends at once) or enable an account."""
    _guard(session, actor)
    user = _target(session, actor, user_id, "disable your own account")
    if user.is_active == active:
        return UserView.of(user)
    if not active and user.role == ADMIN.value:
        _keep_a_super_admin(session, user, "disable")
    user.is_active = active
    if not active:
        user.sessions_revoked_at = utcnow()
    action = "user.enabled" if active else "user.disabled"
    _record(session, actor, action, user.id, user.username)
    return UserView.of(user)


def reset_mfa(session: Session, actor: Actor, user_id: int) -> UserView:
    """Forget an account's authenticator app: it signs in with its password and enrols again."""
    _guard(session, actor)
    user = _get(session, user_id)
    user.totp_secret_encrypted = None
    user.totp_last_step = None
    user.sessions_revoked_at = utcnow()
    _record(session, actor, "user.mfa_reset", user.id, user.username)
    return UserView.of(user)


def unlock(session: Session, actor: Actor, user_id: int) -> UserView:
    """Lift a lockout after failed sign-ins and reset the failure count."""
    _guard(session, actor)
    user = _get(session, user_id)
    user.locked_until = None
    user.failed_logins = 0
    _record(session, actor, "user.unlocked", user.id, user.username)
    return UserView.of(user)


def _guard(session: Session, actor: Actor) -> None:
    require_role(session, actor, ADMIN)
    require_step_up(actor)


def _role(role: UserRole | str) -> UserRole:
    try:
        return UserRole(role)
    except ValueError:
        choices = ", ".join(r.value for r in UserRole)
        raise AuthError(f"Unknown role {role!r}; choose one of {choices}.") from None


def _get(session: Session, user_id: int) -> User:
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise AuthError(f"There is no user {user_id}.")
    return user


def _target(session: Session, actor: Actor, user_id: int, what: str) -> User:
    if actor.user_id == user_id:
        raise PermissionDenied(f"you cannot {what}; ask another super-admin")
    return _get(session, user_id)


def _keep_a_super_admin(session: Session, user: User, verb: str) -> None:
    # Lock every active super-admin row, so two admins demoting each other at the same moment
    # on two replicas cannot both succeed.
    others = session.scalars(
        select(User.id)
        .where(User.role == ADMIN.value, User.is_active, User.id != user.id)
        .with_for_update()
    ).all()
    if not others:
        raise PermissionDenied(
            f"cannot {verb} {user.username}: they are the last active super-admin; "
            "make another account super-admin first"
        )


def _record(
    session: Session,
    actor: Actor,
    action: str,
    user_id: int,
    username: str,
    more: dict[str, object] | None = None,
) -> None:
    """Audit a change to a user account (never its password or secret)."""
    audit.record(
        session,
        actor,
        action,
        target_type="user",
        target_id=user_id,
        details={"username": username, **(more or {})},
    )
