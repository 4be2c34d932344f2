"""The audit trail records who did what, and refuses to store anything that looks secret."""

from __future__ import annotations

import getpass

import pytest
from sqlalchemy import select

from core import audit
from core.access import Actor
from core.models import AdminActionLog
from tests.support.database import MigratedDatabase


def test_record_stores_actor_target_and_origin(db: MigratedDatabase) -> None:
    actor = Actor(label="ada", ip_address="203.0.113.7", user_agent="x" * 900)
    with db.session() as session:
        audit.record(
            session,
            actor,
            "provider.update",
            target_type="provider_config",
            target_id=7,
            details={"changed": ["priority"], "key_last4": "9xYz"},
        )
        session.commit()
        row = session.scalars(select(AdminActionLog)).one()
    assert (row.actor_label, row.action, row.target_type, row.target_id) == (
        "ada",
        "provider.update",
        "provider_config",
        "7",
    )
    assert row.details == {"changed": ["priority"], "key_last4": "9xYz"}
    assert row.ip_address == "203.0.113.7" and len(row.user_agent or "") == 500


@pytest.mark.parametrize(
    "details",
    [
        {"api_key": "sk-1"},
        {"new": {"password": "pw"}},
        {"totp_code": "123456"},
        {"setup_token": "t"},
        {"password_hash": "$2b$"},
    ],
)
def test_details_that_look_secret_are_refused(details: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must not carry secrets"):
        audit.record(None, Actor.cli(), "x", details=details)  # type: ignore[arg-type]


def test_ordinary_fields_that_mention_keys_or_tokens_pass() -> None:
    details = {"daily_token_limit": 5, "key_last4": "abcd", "keys_configured": 2, "tokens": 9}
    audit._refuse_secrets(details)


def test_cli_actor_is_labelled_with_the_os_user() -> None:
    assert Actor.cli().label == f"cli:{getpass.getuser()}"
