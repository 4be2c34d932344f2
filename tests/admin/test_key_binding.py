"""A stored key goes only to the endpoint it was entered for, and refused changes are audited.

An attacker with the console (a stolen session, a careless admin) edits a config's base URL to a
host of theirs and leaves the key empty: the edit is refused before any network call, so the
other host never sees a request, let alone the key. Tried through core, the CLI and the form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from core import cli
from core.access import Actor, PermissionDenied
from core.admin import CredentialsRejected, ProviderAdmin, ValidationFailed
from core.admin import configs as admin_module
from core.models import AdminActionLog, ProviderConfig
from tests.fakes import FakeProviderServer
from tests.support.admin import KEY, NEW_KEY, audit_rows, form, make_actor
from tests.support.database import MigratedDatabase


@pytest.fixture
def elsewhere() -> Any:
    """A second server: the attacker's host. It must never receive a request with a stored key."""
    with FakeProviderServer() as server:
        yield server


def stored(db: MigratedDatabase, config_id: int) -> tuple[str, str | None, str]:
    with db.session() as session:
        row = session.get(ProviderConfig, config_id)
        assert row is not None
        return row.provider_type, row.base_url, row.api_key_encrypted


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda other: {"base_url": other.openai_base_url}, id="base_url"),
        pytest.param(lambda other: {"base_url": ""}, id="base_url-cleared"),
        pytest.param(lambda other: {"provider_type": "claude"}, id="provider_type"),
    ],
)
def test_moving_a_stored_key_to_another_endpoint_is_refused_before_any_call(
    db: MigratedDatabase,
    admin: ProviderAdmin,
    boss: Actor,
    fake_providers: FakeProviderServer,
    elsewhere: FakeProviderServer,
    change: Any,
) -> None:
    view = admin.create(boss, form(fake_providers))
    before = stored(db, view.id)
    sent = len(fake_providers.requests)

    with pytest.raises(ValidationFailed) as refused:
        admin.update(
            boss, view.id, form(fake_providers, api_key="", **change(elsewhere)), view.version
        )
    assert refused.value.errors["api_key"].startswith("paste the API key again to change the")
    assert "entered for 127.0.0.1 and is sent nowhere else" in refused.value.errors["api_key"]
    assert elsewhere.requests == []  # nothing at all reached the other host
    assert len(fake_providers.requests) == sent  # nor the provider: no test ran
    assert stored(db, view.id) == before
    last = audit_rows(db)[-1]
    assert last.action == "provider.update_refused"
    assert last.details["fields"] == ["api_key"] and last.actor_id == boss.user_id
    assert KEY not in json.dumps(last.details)


def test_a_new_key_may_go_to_a_new_endpoint_and_is_tested_there(
    db: MigratedDatabase,
    admin: ProviderAdmin,
    boss: Actor,
    fake_providers: FakeProviderServer,
    elsewhere: FakeProviderServer,
) -> None:
    view = admin.create(boss, form(fake_providers))
    elsewhere.api_keys["openai"] = {NEW_KEY}
    sent = len(fake_providers.requests)
    moved = admin.update(
        boss,
        view.id,
        form(fake_providers, api_key=NEW_KEY, base_url=elsewhere.openai_base_url),
        view.version,
    )
    assert moved.base_url == elsewhere.openai_base_url and moved.masked_key == "…4321"
    assert len(elsewhere.requests) == 1 and len(fake_providers.requests) == sent
    tests = [row for row in audit_rows(db) if row.action == "provider.test"]
    assert tests[-1].details["host"] == "127.0.0.1" and tests[-1].details["ok"] is True
    update = audit_rows(db)[-1]
    assert update.details["changes"]["base_url"] == [
        fake_providers.openai_base_url,
        elsewhere.openai_base_url,
    ]


def test_a_model_change_tests_the_stored_key_where_it_already_goes(
    admin: ProviderAdmin,
    boss: Actor,
    fake_providers: FakeProviderServer,
    elsewhere: FakeProviderServer,
) -> None:
    view = admin.create(boss, form(fake_providers))
    sent = len(fake_providers.requests)
    admin.update(boss, view.id, form(fake_providers, api_key="", model_name="gpt-4o"), view.version)
    assert len(fake_providers.requests) == sent + 1 and elsewhere.requests == []


def test_every_credential_test_and_every_refused_change_is_audited(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    with pytest.raises(CredentialsRejected):
        admin.create(boss, form(fake_providers, api_key="sk-proj-WRONGkey0000000000"))
    view = admin.create(boss, form(fake_providers))
    fake_providers.fail_next("openai", 401)
    admin.test(boss, view.id)
    admin.test_new_key(boss, "openai", KEY, "gpt-4o-mini", fake_providers.openai_base_url)
    with pytest.raises(ValidationFailed):
        admin.update(boss, view.id, form(fake_providers, priority=-1), view.version)
    analyst = make_actor(db, role="analyst")
    with pytest.raises(PermissionDenied):
        admin.delete(analyst, view.id)

    rows = audit_rows(db)
    tests = [
        (r.details["context"], r.details["ok"], r.details["host"])
        for r in rows
        if r.action == "provider.test"
    ]
    assert tests == [
        ("create", False, "127.0.0.1"),
        ("create", True, "127.0.0.1"),
        ("saved", False, "127.0.0.1"),
        ("form", True, "127.0.0.1"),
    ]
    actions = [r.action for r in rows]
    assert actions.count("provider.create_refused") == 1
    refused_update = next(r for r in rows if r.action == "provider.update_refused")
    assert refused_update.details["fields"] == ["priority"]
    denied = next(r for r in rows if r.action == "access.denied")
    assert denied.actor_id == analyst.user_id
    assert denied.details["operation"] == "core.admin.configs:ProviderAdmin.delete"
    assert denied.details["needed"] == ["super_admin"]
    assert all(KEY not in json.dumps(r.details) for r in rows)


def test_an_update_audits_every_field_it_changed(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    admin.update(
        boss,
        view.id,
        form(fake_providers, api_key="", description="Night batch only", is_default=True),
        view.version,
    )
    changes = audit_rows(db)[-1].details["changes"]
    assert changes == {"description": ["", "Night batch only"], "is_default": [False, True]}


def test_the_seed_duplicate_check_needs_the_admin_role(
    db: MigratedDatabase, admin: ProviderAdmin, boss: Actor, fake_providers: FakeProviderServer
) -> None:
    view = admin.create(boss, form(fake_providers))
    assert admin.stored_key_matches(boss, view.id, KEY)
    with pytest.raises(PermissionDenied):
        admin.stored_key_matches(make_actor(db, role="analyst"), view.id, KEY)


# --- the command line ------------------------------------------------------------------------


def run_cli(db: MigratedDatabase, *argv: str) -> int:
    return cli.main(list(argv), settings=db.settings)


def test_cli_edit_changes_what_it_is_told_and_keeps_the_rest(
    db: MigratedDatabase,
    admin: ProviderAdmin,
    boss: Actor,
    fake_providers: FakeProviderServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = admin.create(boss, form(fake_providers))
    assert run_cli(
        db, "providers", "edit", str(view.id), "--priority", "7", "--daily-limit", "unlimited",
        "--description", "Backup", "--inactive",
    ) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith(f"Saved provider config {view.id}: OpenAI Mini")
    after = admin.get(boss, view.id)
    assert (after.priority, after.daily_token_limit, after.description, after.is_active) == (
        7,
        None,
        "Backup",
        False,
    )
    assert after.tasks == view.tasks and after.key_last4 == view.key_last4
    last = audit_rows(db)[-1]
    assert last.action == "provider.update" and last.actor_label.startswith("cli:")


def test_cli_edit_of_the_base_url_needs_the_key_again(
    db: MigratedDatabase,
    admin: ProviderAdmin,
    boss: Actor,
    fake_providers: FakeProviderServer,
    elsewhere: FakeProviderServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view = admin.create(boss, form(fake_providers))
    code = run_cli(db, "providers", "edit", str(view.id), "--base-url", elsewhere.openai_base_url)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: not saved: --api-key-env: paste the API key again")
    assert elsewhere.requests == []
    assert admin.get(boss, view.id).base_url == fake_providers.openai_base_url

    elsewhere.api_keys["openai"] = {NEW_KEY}
    monkeypatch.setenv("NEW_OPENAI_KEY", NEW_KEY)
    assert run_cli(
        db, "providers", "edit", str(view.id), "--base-url", elsewhere.openai_base_url,
        "--api-key-env", "NEW_OPENAI_KEY",
    ) == 0  # fmt: skip
    assert "credentials verified" in capsys.readouterr().out
    assert admin.get(boss, view.id).base_url == elsewhere.openai_base_url


def test_cli_edit_with_skip_validation_sends_the_new_key_nowhere(
    db: MigratedDatabase,
    admin: ProviderAdmin,
    boss: Actor,
    fake_providers: FakeProviderServer,
    elsewhere: FakeProviderServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--skip-validation saves without a credential test, for an edit as for an add."""
    view = admin.create(boss, form(fake_providers))
    monkeypatch.setenv("NEW_OPENAI_KEY", NEW_KEY)
    assert run_cli(
        db, "providers", "edit", str(view.id), "--base-url", elsewhere.openai_base_url,
        "--api-key-env", "NEW_OPENAI_KEY", "--skip-validation",
    ) == 0  # fmt: skip
    assert elsewhere.requests == []
    assert admin.get(boss, view.id).base_url == elsewhere.openai_base_url
    assert admin.stored_key_matches(boss, view.id, NEW_KEY)
    assert "credentials verified" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--priority", "2147483648"], "--priority: must be at most 2,147,483,647"),
        (["--priority", "-1"], "--priority: must not be negative"),
        (["--daily-limit", str(2**63)], "--daily-limit: must be at most 9,223,372,036,854,775,807"),
        (["--monthly-limit", "lots"], "--monthly-limit: must be a whole number"),
        (["--name", "Mini\x00"], "--name: must not contain control characters"),
        (["--description", "a\x1b[31mred"], "--description: must not contain control characters"),
        (["--model", "gpt\n4o"], "--model: must not contain control characters"),
        (["--type", "mistral"], "--type: unknown provider type 'mistral'"),
        (["--tasks", "extraction,poetry"], "--tasks: unknown task poetry"),
    ],
)
def test_cli_edit_bounds_every_field_before_the_database(
    db: MigratedDatabase,
    admin: ProviderAdmin,
    boss: Actor,
    fake_providers: FakeProviderServer,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    view = admin.create(boss, form(fake_providers))
    sent = len(fake_providers.requests)
    assert run_cli(db, "providers", "edit", str(view.id), *flags) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert "INSERT" not in err and "UPDATE" not in err and "gAAAA" not in err
    assert len(fake_providers.requests) == sent  # checked before the credential test
    assert admin.get(boss, view.id).version == view.version


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--priority", "2147483648"], "--priority: must be at most 2,147,483,647"),
        (["--daily-limit", str(2**63)], "--daily-limit: must be at most"),
        (["--name", "nul\x00name"], "--name: must not contain control characters"),
    ],
)
def test_cli_add_refuses_out_of_range_input_with_one_line_and_saves_nothing(
    db: MigratedDatabase,
    fake_providers: FakeProviderServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    message: str,
) -> None:
    fake_providers.api_keys["openai"] = {KEY}
    monkeypatch.setenv("OPENAI_KEY", KEY)
    base = ["providers", "add", "--type", "openai", "--model", "gpt-4o-mini", "--name", "Mini"]
    base += ["--api-key-env", "OPENAI_KEY", "--base-url", fake_providers.openai_base_url]
    assert run_cli(db, *base, *flags) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "gAAAA" not in err
    assert fake_providers.requests == []
    with db.session() as session:
        assert session.scalars(select(ProviderConfig)).all() == []
        assert session.scalars(select(AdminActionLog.action)).all() == ["provider.create_refused"]


def test_database_errors_never_print_statements_or_parameters(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever slips past validation, the CLI prints the driver's first line and nothing else:
    no SQL, no parameters (which would carry ciphertext)."""

    checked = admin_module.clean

    def past_the_check(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return checked(*args, **kwargs) | {"priority": 2**40}  # the database must refuse it

    monkeypatch.setattr(admin_module, "clean", past_the_check)
    monkeypatch.setenv("OPENAI_KEY", KEY)
    code = run_cli(
        db, "providers", "add", "--type", "openai", "--model", "gpt-4o-mini", "--name", "Mini",
        "--api-key-env", "OPENAI_KEY", "--skip-validation",
    )  # fmt: skip
    err = capsys.readouterr().err
    if db.backend == "sqlite":  # SQLite stores any integer: nothing to refuse
        assert code == 0
        return
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: the database refused this, nothing was saved:")
    for leak in ("INSERT", "parameters", "gAAAA", "1099511627776", KEY[-8:]):
        assert leak not in err
