"""Managing console accounts: list, add, change role, reset MFA, unlock, disable and enable.

`unlock` clears an account's sign-in throttles (core.auth): its wrong passwords from every
address and its wrong codes. It leaves address-wide throttles alone, which belong to addresses.

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
from core.access import Actor, PermissionDenied, require_role, require_step_up
from core.accounts import (
    AccountThrottle,
    AuthError,
    account_throttles,
    check_account_fields,
    clear_account_throttles,
    hash_password,
    normalize_username,
)
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
    # Until when some address (or its codes) must wait before trying this account again.
    throttled_until: datetime | None
    failed_logins: int  # wrong passwords (from every address) and codes in the current window
    last_login_at: datetime | None
    created_at: datetime

    def is_throttled(self, now: datetime | None = None) -> bool:
        return self.throttled_until is not None and self.throttled_until > (now or utcnow())

    def status(self, now: datetime | None = None) -> str:
        """disabled, throttled (failed sign-ins make someone wait) or active."""
        if not self.is_active:
            return "disabled"
        return "throttled" if self.is_throttled(now) else "active"

    @classmethod
    def of(cls, user: User, throttle: AccountThrottle | None = None) -> UserView:
        throttle = throttle or AccountThrottle()
        return cls(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            role=user.role,
            is_active=user.is_active,
            mfa_enrolled=user.totp_secret_encrypted is not None,
            throttled_until=throttle.until,
            failed_logins=throttle.failures,
            last_login_at=user.last_login_at,
            created_at=user.created_at,
        )


def list_users(session: Session, actor: Actor) -> list[UserView]:
    """Every account, by username, with its throttles (super-admins only)."""
    require_role(session, actor, ADMIN)
    accounts = session.scalars(select(User).order_by(User.username)).all()
    throttles = account_throttles(session, [u.username for u in accounts])
    return [UserView.of(u, throttles.get(u.username)) for u in accounts]


def user_id_of(session: Session, actor: Actor, username: str) -> int:
    """The id of the account called `username` (super-admins only); AuthError if none is."""
    require_role(session, actor, ADMIN)
    name = normalize_username(username)
    user_id = session.scalar(select(User.id).where(User.username == name))
    if user_id is None:
        raise AuthError(f"There is no user {name!r}.")
    return user_id


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
    # Every field is checked before the database sees it (PostgreSQL refuses NUL outright).
    role = _role(role)
    name, shown, address = check_account_fields(username, password, display_name, email)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise AuthError(f"The username {name!r} is taken.", field="username")
    user = User(
        username=name,
        display_name=shown,
        email=address,
        password_hash=hash_password(password),
        role=role.value,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # created concurrently by someone else
        raise AuthError(f"The username {name!r} is taken.", field="username") from None
    session.execute(delete(SetupToken))  # a first user made here makes the setup token moot
    _record(session, actor, "user.created", user.id, name, {"role": role.value})
    return _view(session, user)


def change_role(session: Session, actor: Actor, user_id: int, role: UserRole | str) -> UserView:
    """Give an account another role; the last active super-admin keeps theirs."""
    _guard(session, actor)
    user = _target(session, actor, user_id, "change your own role")
    role = _role(role)
    if user.role == role.value:
        return _view(session, user)
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
    return _view(session, user)


def set_active(session: Session, actor: Actor, user_id: int, active: bool) -> UserView:
    """Disable (every session ends at once) or enable an account."""
    _guard(session, actor)
    user = _target(session, actor, user_id, "disable your own account")
    if user.is_active == active:
        return _view(session, user)
    if not active and user.role == ADMIN.value:
        _keep_a_super_admin(session, user, "disable")
    user.is_active = active
    if not active:
        user.sessions_revoked_at = utcnow()
    action = "user.enabled" if active else "user.disabled"
    _record(session, actor, action, user.id, user.username)
    return _view(session, user)


def reset_mfa(session: Session, actor: Actor, user_id: int) -> UserView:
    """Forget an account's authenticator app: it signs in with its password and enrols again."""
    _guard(session, actor)
    user = _get(session, user_id)
    user.totp_secret_encrypted = None
    user.totp_last_step = None
    user.sessions_revoked_at = utcnow()
    _record(session, actor, "user.mfa_reset", user.id, user.username)
    return _view(session, user)


def unlock(session: Session, actor: Actor, user_id: int) -> UserView:
    """Clear the account's sign-in throttles (wrong passwords from every address, wrong codes)."""
    _guard(session, actor)
    user = _get(session, user_id)
    clear_account_throttles(session, user.username)
    _record(session, actor, "user.unlocked", user.id, user.username)
    return _view(session, user)


def _view(session: Session, user: User) -> UserView:
    return UserView.of(user, account_throttles(session, [user.username]).get(user.username))


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
