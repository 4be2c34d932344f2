"""Operator commands: migrate, keys, users and demo data."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from sqlalchemy.orm import Session

from core import accounts, audit
from core.access import Actor
from core.admin import (
    ProviderAdmin,
)
from core.cli.common import CliError, migrated_engine, safe_url
from core.config import Settings
from core.crypto import (
    generate_key,
    load_cipher,
    rotate_all_secrets,
)
from core.db import make_engine, make_session_factory, schema_status, session_scope, upgrade


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> None:
    load_cipher(settings)  # production without a key fails here, before anything starts
    engine = make_engine(settings)
    upgrade(engine)
    status = schema_status(engine)
    print(f"Database {safe_url(settings)} is at revision {status.current} (head).")
    with session_scope(make_session_factory(engine)) as session:
        issued = accounts.issue_setup_token(session)
    if issued is not None:
        print(
            "\nNo user exists yet. Open the console and enter this one-time setup token to create "
            f"the first super-admin:\n\n    {issued.token}\n\nIt works once, until "
            f"{issued.expires_at:%Y-%m-%d %H:%M} UTC; running migrate again replaces it."
        )


def cmd_users_add(settings: Settings, args: argparse.Namespace) -> None:
    password = _read_password()
    engine = migrated_engine(settings)
    with session_scope(make_session_factory(engine)) as session:
        view = accounts.create_user(
            session,
            Actor.cli(),
            args.name,
            password,
            args.role,
            args.display_name,
            args.email,
        )
    then = " They must set up an authenticator app at their first sign-in."
    print(f"Added {view.username} ({view.role}).{then if view.role == 'super_admin' else ''}")


def cmd_users_unlock(settings: Settings, args: argparse.Namespace) -> None:
    view = _on_user(settings, args.name, accounts.unlock)
    print(f"Unlocked {view.username}: its failed sign-ins and codes are forgotten.")


def cmd_users_reset_mfa(settings: Settings, args: argparse.Namespace) -> None:
    view = _on_user(settings, args.name, accounts.reset_mfa)
    print(
        f"Reset the authenticator app of {view.username}: they sign in with their password and "
        "set up an authenticator app again; their sessions have ended."
    )


def _on_user(
    settings: Settings, name: str, action: Callable[[Session, Actor, int], accounts.UserView]
) -> accounts.UserView:
    """Run an account action on the user named `name`, as the operator."""
    engine = migrated_engine(settings)
    with session_scope(make_session_factory(engine)) as session:
        actor = Actor.cli()
        return action(session, actor, accounts.user_id_of(session, actor, name))


def _read_password() -> str:
    """Twice from a terminal prompt, or the first line of standard input (for scripts)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat the password: ") != password:
        raise CliError("the two passwords differ")
    return password


def cmd_keys_generate(_settings: Settings, _args: argparse.Namespace) -> None:
    print(generate_key())


def cmd_keys_rotate(settings: Settings, _args: argparse.Namespace) -> None:
    box = load_cipher(settings)
    engine = migrated_engine(settings)
    with session_scope(make_session_factory(engine), immediate=True) as session:
        report = rotate_all_secrets(session, box)
        audit.record(
            session,
            Actor.cli(),
            "keys.rotate",
            target_type="fernet_keys",
            details={
                "provider_configs": report.provider_keys,
                "mfa_enrolments": report.totp_secrets,
                "alert_rules": report.alert_targets,
                "keys_configured": box.key_count,
            },
        )
    print(
        f"Re-encrypted {report.provider_keys} provider key(s), {report.totp_secrets} TOTP "
        f"secret(s) and {report.alert_targets} alert target(s) with the newest key."
    )
    if box.key_count > 1:
        print("Older keys are no longer needed: remove them from AI_CONSOLE_FERNET_KEYS.")
    else:
        print(
            "Only one key is configured; to rotate, put a new key first in AI_CONSOLE_FERNET_KEYS."
        )


MAX_DEMO_DAYS, MAX_DEMO_CALLS = 400, 20_000_000


def cmd_demo_data(settings: Settings, args: argparse.Namespace) -> None:
    from core.usage import demo

    if not args.purge and not (0 < args.days <= MAX_DEMO_DAYS and 0 < args.calls <= MAX_DEMO_CALLS):
        raise CliError(f"--days must be 1 to {MAX_DEMO_DAYS} and --calls 1 to {MAX_DEMO_CALLS:,}")
    engine = migrated_engine(settings)
    admin = ProviderAdmin(make_session_factory(engine), load_cipher(settings))
    if args.purge:
        gone = demo.purge_demo_data(engine, admin, Actor.cli())
        kept = (
            f" ({gone.configs_kept} kept: other usage refers to them)" if gone.configs_kept else ""
        )
        print(
            f"Removed {gone.rows:,} demo usage row(s) and {gone.configs_removed} demo "
            f"config(s){kept}."
        )
        return
    done = demo.add_demo_data(engine, admin, Actor.cli(), args.days, args.calls, seed=args.seed)
    print(
        f"Added {done.rows:,} demo usage rows from {done.start:%Y-%m-%d %H:%M} to "
        f"{done.end:%Y-%m-%d %H:%M} UTC ({done.configs_created} demo config(s) created, inactive). "
        "Open Usage in the console; `python -m core demo-data --purge` removes them."
    )
