"""Roles and step-up MFA are checked in core, against the database, not only by hiding pages."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.access import Actor, PermissionDenied, StepUpRequired, require_role, require_step_up
from core.models import User, UserRole, utcnow
from tests.support.database import MigratedDatabase

ADMIN, ANALYST = UserRole.SUPER_ADMIN, UserRole.ANALYST


def add_user(db: MigratedDatabase, role: str, active: bool = True) -> Actor:
    with db.session() as session:
        user = User(username=f"u-{role}-{active}", password_hash="h", role=role, is_active=active)
        session.add(user)
        session.commit()
        return Actor(label=user.username, user_id=user.id)


def test_an_analyst_cannot_act_as_super_admin(db: MigratedDatabase) -> None:
    analyst = add_user(db, "analyst")
    with db.session() as session:
        assert require_role(session, analyst, ADMIN, ANALYST).role == "analyst"  # type: ignore[union-attr]
        with pytest.raises(PermissionDenied, match="needs the super-admin role"):
            require_role(session, analyst, ADMIN)


def test_a_disabled_or_unknown_user_is_refused(db: MigratedDatabase) -> None:
    disabled = add_user(db, "super_admin", active=False)
    with db.session() as session:
        for actor in (disabled, Actor(label="ghost", user_id=999), Actor(label="anon")):
            with pytest.raises(PermissionDenied, match="not signed in with an active account"):
                require_role(session, actor, ADMIN)


def test_a_demotion_takes_effect_at_once(db: MigratedDatabase) -> None:
    admin = add_user(db, "super_admin")
    with db.session() as session:
        require_role(session, admin, ADMIN)
        session.get(User, admin.user_id).role = "analyst"  # type: ignore[union-attr]
        session.commit()
        with pytest.raises(PermissionDenied):
            require_role(session, admin, ADMIN)


def test_the_operator_passes_role_checks(db: MigratedDatabase) -> None:
    with db.session() as session:
        assert require_role(session, Actor.cli(), ADMIN) is None


def test_step_up_needs_a_code_verified_in_the_last_ten_minutes() -> None:
    now = utcnow()
    require_step_up(Actor(label="a", user_id=1, mfa_verified_at=now - timedelta(minutes=9)), now)
    for verified in (None, now - timedelta(minutes=10, seconds=1)):
        with pytest.raises(StepUpRequired):
            require_step_up(Actor(label="a", user_id=1, mfa_verified_at=verified), now)
    require_step_up(Actor.cli(), now)
