"""The provider-config service, on both databases, validating keys against the fake server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from core.access import Actor, PermissionDenied, StepUpRequired
from core.admin import (
    CredentialsRejected,
    NotFound,
    ProviderAdmin,
    StaleEdit,
    ValidationFailed,
)
from core.crypto import SecretBox, generate_key
from core.db import make_session_factory
from core.models import ProviderConfig, utcnow
from tests.fakes import FakeProviderServer
from tests.support.admin import KEY, NEW_KEY, audit_rows, form, make_actor, raw_rows
from tests.support.database import MigratedDatabase

# --- create ----------------------------------------------------------------------------------


def test_create_with_a_good_key_saves_it_encrypted(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))

    assert (view.display_name, view.tasks, view.masked_key) == (
        "OpenAI Mini",
        ("extraction", "validation"),
        "…6789",
    )
    assert view.last_test_success is True and "gpt-4o-mini is available" in view.last_test_message
    assert fake_providers.last_request("openai").path == "/v1/models/gpt-4o-mini"
    with db.session() as session:
        row = session.get(ProviderConfig, view.id)
        assert row is not None and row.created_by_id == boss.user_id
        assert SecretBox(db.settings.fernet_keys).decrypt(row.api_key_encrypted) == KEY
    assert KEY not in repr(raw_rows(db, "ai_provider_configs"))
    test, log = audit_rows(db)
    assert (test.action, test.details["context"], test.details["ok"]) == (
        "provider.test",
        "create",
        True,
    )
    assert (log.action, log.actor_id, log.ip_address) == (
        "provider.create",
        boss.user_id,
        "203.0.113.9",
    )
    assert log.details["key_last4"] == "6789" and KEY not in json.dumps(log.details)


def test_create_with_a_bad_key_saves_nothing_and_says_why(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    with pytest.raises(CredentialsRejected) as caught:
        admin.create(boss, form(fake_providers, api_key="sk-proj-WRONGwrongWRONG0000"))
    assert str(caught.value).startswith("Not saved: The key was refused")
    assert "WRONGwrong" not in str(caught.value)
    assert raw_rows(db, "ai_provider_configs") == []
    test, refusal = audit_rows(db)  # the test, then the refusal: nothing else
    assert (test.action, test.details["ok"]) == ("provider.test", False)
    assert refusal.action == "provider.create_refused"
    assert refusal.details["reason"] == "CredentialsRejected"
    assert "WRONGwrong" not in json.dumps([test.details, refusal.details])


def test_create_with_an_unknown_model_says_so(
    admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    with pytest.raises(CredentialsRejected, match="model was not found"):
        admin.create(boss, form(fake_providers, model_name="gpt-imaginary"))


def test_create_can_skip_validation_when_told(
    admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers, api_key="sk-offline-0000000"), validate=False)
    assert view.last_tested_at is None and view.last_test_success is None
    assert fake_providers.requests == []


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"provider_type": "mistral"}, "provider_type", "unknown provider type 'mistral'"),
        ({"model_name": "  "}, "model_name", "must not be empty"),
        ({"display_name": ""}, "display_name", "must not be empty"),
        ({"api_key": ""}, "api_key", "must not be empty"),
        ({"api_key": "sk has spaces"}, "api_key", "does not look like an API key"),
        ({"daily_token_limit": -1}, "daily_token_limit", "must not be negative"),
        ({"monthly_token_limit": 2.5}, "monthly_token_limit", "must be a whole number"),
        ({"monthly_token_limit": "lots"}, "monthly_token_limit", "must be a whole number"),
        ({"priority": True}, "priority", "must be a whole number"),
        ({"priority": None}, "priority", "must be given"),
        ({"base_url": "ftp://host"}, "base_url", "http:// or https://"),
        ({"base_url": "https://u:pw@proxy/v1"}, "base_url", "must not contain credentials"),
        ({"tasks": ["poetry"]}, "tasks", "unknown task poetry"),
        ({"priority": 2**31}, "priority", "must be at most 2,147,483,647"),
        ({"priority": "--5"}, "priority", "must be a whole number"),
        ({"daily_token_limit": 2**63}, "daily_token_limit", "at most 9,223,372,036,854,775,807"),
        ({"monthly_token_limit": "1" * 41}, "monthly_token_limit", "must be a whole number"),
        ({"display_name": "Mini\x00"}, "display_name", "must not contain control characters"),
        ({"model_name": "gpt\x1b[2J"}, "model_name", "must not contain control characters"),
        ({"description": "one\ntwo"}, "description", "must not contain control characters"),
        ({"description": "rtl\u202eevil"}, "description", "must not contain control characters"),
        ({"base_url": "https://proxy\x00.example/v1"}, "base_url", "control characters"),
        ({"base_url": "https://proxy:99999/v1"}, "base_url", "http:// or https://"),
        ({"api_key": "sk-proj-\x00abcdefgh"}, "api_key", "does not look like an API key"),
        ({"tasks": ["extraction\x00"]}, "tasks", "must not contain control characters"),
    ],
)
def test_bad_fields_are_refused_by_name_and_change_nothing(
    db: MigratedDatabase,
    admin: ProviderAdmin,
    boss: Actor,
    fake_providers: FakeProviderServer,
    overrides: dict[str, Any],
    field: str,
    message: str,
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        admin.create(boss, form(fake_providers, **overrides))
    assert list(caught.value.errors) == [field]
    assert message in caught.value.errors[field]
    assert str(caught.value).startswith(f"{field}: ")
    assert raw_rows(db, "ai_provider_configs") == []
    (refusal,) = audit_rows(db)  # the refusal itself is audited, and nothing else happened
    assert refusal.action == "provider.create_refused" and refusal.details["fields"] == [field]
    assert fake_providers.requests == []  # refused before any provider call


def test_limits_typed_as_text_are_accepted(
    admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(
        boss, form(fake_providers, daily_token_limit="1,000,000", monthly_token_limit="")
    )
    assert (view.daily_token_limit, view.monthly_token_limit) == (1_000_000, None)


def test_only_one_default_the_newest_wins(
    admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    first = admin.create(boss, form(fake_providers, is_default=True))
    second = admin.create(boss, form(fake_providers, display_name="B", is_default=True))
    views = {view.id: view for view in admin.list(boss)}
    assert views[second.id].is_default and not views[first.id].is_default


# --- update ----------------------------------------------------------------------------------


def test_update_without_a_key_keeps_the_ciphertext_and_skips_the_provider(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    stored = raw_rows(db, "ai_provider_configs")[0]
    calls = len(fake_providers.requests)

    edited = admin.update(
        boss, view.id, form(fake_providers, api_key="", priority=5), expected_version=view.version
    )
    assert (edited.priority, edited.version, edited.masked_key) == (5, 2, "…6789")
    with db.session() as session:
        row = session.get(ProviderConfig, view.id)
        assert row is not None and row.api_key_encrypted == stored[2]
    assert len(fake_providers.requests) == calls
    log = audit_rows(db)[-1]
    assert log.action == "provider.update"
    assert log.details == {"changes": {"priority": [100, 5]}, "key_replaced": False}


def test_update_with_a_new_key_tests_and_re_encrypts_it(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    edited = admin.update(boss, view.id, form(fake_providers, api_key=NEW_KEY), view.version)
    assert edited.masked_key == "…4321"
    with db.session() as session:
        row = session.get(ProviderConfig, view.id)
        assert SecretBox(db.settings.fernet_keys).decrypt(row.api_key_encrypted) == NEW_KEY  # type: ignore[union-attr]
    details = json.dumps(audit_rows(db)[-1].details)
    assert NEW_KEY not in details and KEY not in details and '"key_replaced": true' in details


def test_update_of_the_model_is_tested_with_the_stored_key(
    admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    with pytest.raises(CredentialsRejected, match="model was not found"):
        admin.update(
            boss, view.id, form(fake_providers, api_key=None, model_name="gpt-nope"), view.version
        )
    assert admin.get(boss, view.id).model_name == "gpt-4o-mini"


def test_a_stale_edit_is_refused_not_merged(
    admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    admin.update(boss, view.id, form(fake_providers, api_key=None, priority=1), view.version)
    with pytest.raises(StaleEdit, match="was changed by someone else after you opened it"):
        admin.update(
            boss, view.id, form(fake_providers, api_key=None, display_name="Mine"), view.version
        )
    current = admin.get(boss, view.id)
    assert (current.priority, current.display_name, current.version) == (1, "OpenAI Mini", 2)


def test_changing_the_provider_type_needs_a_new_key(
    admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    with pytest.raises(ValidationFailed, match="api_key: paste the API key again"):
        admin.update(
            boss, view.id, form(fake_providers, api_key="", provider_type="claude"), view.version
        )


# --- test, activate, delete --------------------------------------------------------------------


def test_testing_a_saved_config_records_the_outcome_without_staling_forms(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    fake_providers.fail_next("openai", 401)
    check = admin.test(boss, view.id)
    assert not check.ok and "refused" in check.message
    after = admin.get(boss, view.id)
    assert after.last_test_success is False and after.last_test_message == check.message
    assert after.version == view.version  # an open edit form is still valid
    details = audit_rows(db)[-1].details
    assert (details["context"], details["ok"], details["host"]) == ("saved", False, "127.0.0.1")
    assert details["latency_ms"] == check.latency_ms
    assert admin.test(boss, view.id).ok


def test_a_key_that_no_longer_decrypts_fails_its_test_with_advice(
    db: MigratedDatabase, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    fake_providers.api_keys["openai"] = {KEY}
    sessions = make_session_factory(db.engine)
    ProviderAdmin(sessions, SecretBox([generate_key()])).create(boss, form(fake_providers))
    check = ProviderAdmin(sessions, SecretBox(db.settings.fernet_keys)).test(boss, 1)
    assert not check.ok and "cannot be decrypted" in check.message


def test_deactivate_and_delete_are_audited_and_warn_about_orphaned_tasks(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    only = admin.create(boss, form(fake_providers, tasks=["extraction", "cv_draft"]))
    admin.create(boss, form(fake_providers, display_name="Backup", tasks=["extraction"]))
    assert admin.tasks_only_served_by(boss, only.id) == ["cv_draft"]
    assert admin.set_active(boss, only.id, False).is_active is False
    removed = admin.delete(boss, only.id)
    assert removed.id == only.id
    with pytest.raises(NotFound):
        admin.get(boss, only.id)
    actions = [log.action for log in audit_rows(db)]
    assert actions[-2:] == ["provider.deactivate", "provider.delete"]
    assert audit_rows(db)[-1].details["left_unserved"] == ["cv_draft"]


# --- who may ---------------------------------------------------------------------------------


def test_an_analyst_may_read_but_not_change(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    analyst = make_actor(db, role="analyst")
    assert [v.id for v in admin.list(analyst)] == [view.id]
    for attempt in (
        lambda: admin.create(analyst, form(fake_providers)),
        lambda: admin.update(analyst, view.id, form(fake_providers, api_key=""), view.version),
        lambda: admin.delete(analyst, view.id),
        lambda: admin.test(analyst, view.id),
        lambda: admin.set_active(analyst, view.id, False),
    ):
        with pytest.raises(PermissionDenied, match="needs the super-admin role"):
            attempt()
    assert len(raw_rows(db, "ai_provider_configs")) == 1


def test_changes_need_a_fresh_second_factor(
    db: MigratedDatabase, admin: ProviderAdmin, fake_providers: FakeProviderServer
) -> None:
    stale = make_actor(db, fresh=False)
    with pytest.raises(StepUpRequired):
        admin.create(stale, form(fake_providers))
    with pytest.raises(StepUpRequired):
        admin.test_new_key(stale, "openai", KEY, "gpt-4o-mini", fake_providers.openai_base_url)
    assert raw_rows(db, "ai_provider_configs") == [] and fake_providers.requests == []
    fresh = dataclasses.replace(stale, mfa_verified_at=utcnow())
    assert admin.test_new_key(fresh, "openai", KEY, "gpt-4o-mini", fake_providers.openai_base_url)
