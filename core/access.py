"""Who may do what: role checks and the step-up MFA check, enforced in core.

Pages hide what a role cannot use, but that is only convenience: every service that reads or
changes protected data calls `require_role` itself, because URLs can be typed. The role is read
from the database on each check, so a demotion or a disabled account takes effect at once.
Sensitive changes (provider create/update/delete/test with a new key, user management, key
rotation) also call `require_step_up`: a TOTP code verified within the last ten minutes.
"""

from __future__ import annotations

import getpass
import logging
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import audit
from core.models import User, UserRole, utcnow

STEP_UP_WINDOW = timedelta(minutes=10)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who performs an action: a console user (with IP and browser) or an operator's shell.

    `mfa_verified_at` is when this user last proved a TOTP code in this console session; the
    step-up check in core.access reads it. An operator (shell access to the deployment) is
    trusted for every action and has no console user.
    """

    label: str
    user_id: int | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    mfa_verified_at: datetime | None = None
    is_operator: bool = False

    @classmethod
    def cli(cls) -> Actor:
        """The operator running `python -m core` (actor_label `cli:<os user>`)."""
        try:
            user = getpass.getuser()
        except OSError:  # no user name in this environment (some containers)
            user = "unknown"
        return cls(label=f"cli:{user}", is_operator=True)


class PermissionDenied(Exception):
    """The actor may not do this; the message says why, without revealing protected data."""


class StepUpRequired(PermissionDenied):
    """A fresh TOTP code is needed first (the console asks for one in a dialog)."""


def require_role(session: Session, actor: Actor, *roles: UserRole) -> User | None:
    """The acting user, if active and holding one of `roles`; the operator passes as None.

    A refusal is audited (`access.denied`, naming the operation that was refused) in a
    transaction of its own, since the caller's rolls back when PermissionDenied propagates.
    """
    if actor.is_operator:
        return None
    user = session.get(User, actor.user_id) if actor.user_id is not None else None
    if user is None or not user.is_active:
        known = user is not None  # an unknown id must not reach the audit row's foreign key
        _deny(session, actor if known else replace(actor, user_id=None), "no active account", roles)
        raise PermissionDenied("you are not signed in with an active account")
    if user.role not in {role.value for role in roles}:
        _deny(session, actor, f"role {user.role}", roles)
        needed = " or ".join(role.value.replace("_", "-") for role in roles)
        raise PermissionDenied(f"this needs the {needed} role")
    return user


def _deny(session: Session, actor: Actor, reason: str, roles: tuple[UserRole, ...]) -> None:
    frame = sys._getframe(2)  # the service function that asked is what was refused
    while frame.f_back is not None and frame.f_code.co_name.startswith("_"):
        frame = frame.f_back  # past private helpers such as a module's _guard
    details = {
        "operation": f"{frame.f_globals.get('__name__')}:{frame.f_code.co_qualname}",
        "reason": reason,
        "needed": [role.value for role in roles],
    }
    try:
        with Session(session.get_bind()) as own, own.begin():
            audit.record(own, actor, "access.denied", details=details)
    except SQLAlchemyError as exc:  # the refusal stands even if it cannot be written down
        log.warning("could not audit a permission refusal for %s: %s", actor.label, exc)


def require_step_up(actor: Actor, now: datetime | None = None) -> None:
    """Refuse unless the actor verified a TOTP code within STEP_UP_WINDOW."""
    if actor.is_operator:
        return
    verified = actor.mfa_verified_at
    if verified is None or (now or utcnow()) - verified > STEP_UP_WINDOW:
        raise StepUpRequired("confirm with a code from your authenticator app to continue")
