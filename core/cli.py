"""`python -m core`: the operator's command line.

Each command exits non-zero with one clear line on bad input, and every change it makes writes
an audit row with actor_label `cli:<os user>`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from core import accounts, audit
from core.admin import (
    AdminError,
    ProviderAdmin,
    ProviderInput,
    ProviderView,
    ValidationFailed,
)
from core.config import ConfigError, Settings
from core.crypto import (
    DecryptionError,
    generate_key,
    load_cipher,
    rotate_all_secrets,
)
from core.db import make_engine, make_session_factory, schema_status, session_scope, upgrade
from core.models import TASKS
from core.routing import LEGACY_PROVIDERS

# The flag that sets each field the core services name in their refusals.
FLAGS = {
    "provider_type": "--type",
    "model_name": "--model",
    "display_name": "--name",
    "api_key": "--api-key-env",
    "description": "--description",
    "base_url": "--base-url",
    "tasks": "--tasks",
    "priority": "--priority",
    "daily_token_limit": "--daily-limit",
    "monthly_token_limit": "--monthly-limit",
}


class CliError(Exception):
    """A failure the operator can act on; printed as one line."""


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> None:
    load_cipher(settings)  # production without a key fails here, before anything starts
    engine = make_engine(settings)
    upgrade(engine)
    status = schema_status(engine)
    print(f"Database {_safe_url(settings)} is at revision {status.current} (head).")
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
    engine = _migrated_engine(settings)
    with session_scope(make_session_factory(engine)) as session:
        view = accounts.create_user(
            session,
            audit.Actor.cli(),
            args.name,
            password,
            args.role,
            args.display_name,
            args.email,
        )
    then = " They must set up an authenticator app at their first sign-in."
    print(f"Added {view.username} ({view.role}).{then if view.role == 'super_admin' else ''}")


def cmd_users_unlock(settings: Settings, args: argparse.Namespace) -> None:
    engine = _migrated_engine(settings)
    with session_scope(make_session_factory(engine)) as session:
        actor = audit.Actor.cli()
        view = accounts.unlock(session, actor, accounts.user_id_of(session, actor, args.name))
    print(f"Unlocked {view.username}: its failed sign-ins and codes are forgotten.")


def cmd_users_reset_mfa(settings: Settings, args: argparse.Namespace) -> None:
    engine = _migrated_engine(settings)
    with session_scope(make_session_factory(engine)) as session:
        actor = audit.Actor.cli()
        view = accounts.reset_mfa(session, actor, accounts.user_id_of(session, actor, args.name))
    print(
        f"Reset the authenticator app of {view.username}: they sign in with their password and "
        "set up an authenticator app again; their sessions have ended."
    )


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
    engine = _migrated_engine(settings)
    with session_scope(make_session_factory(engine)) as session:
        report = rotate_all_secrets(session, box)
        audit.record(
            session,
            audit.Actor.cli(),
            "keys.rotate",
            target_type="fernet_keys",
            details={
                "provider_configs": report.provider_keys,
                "mfa_enrolments": report.totp_secrets,
                "keys_configured": box.key_count,
            },
        )
    print(
        f"Re-encrypted {report.provider_keys} provider key(s) and {report.totp_secrets} TOTP "
        "secret(s) with the newest key."
    )
    if box.key_count > 1:
        print("Older keys are no longer needed: remove them from AI_CONSOLE_FERNET_KEYS.")
    else:
        print(
            "Only one key is configured; to rotate, put a new key first in AI_CONSOLE_FERNET_KEYS."
        )


# --- providers -----------------------------------------------------------------------------


def _provider_admin(settings: Settings) -> ProviderAdmin:
    engine = _migrated_engine(settings)
    return ProviderAdmin(make_session_factory(engine), load_cipher(settings))


def cmd_providers_list(settings: Settings, args: argparse.Namespace) -> None:
    views = _provider_admin(settings).list(audit.Actor.cli())
    if args.json:
        print(json.dumps([view.as_dict() for view in views], indent=2))
        return
    if not views:
        print("No provider configs yet. Add one with `python -m core providers add --help`.")
        return
    rows = [
        (
            "ID",
            "TYPE",
            "MODEL",
            "NAME",
            "TASKS",
            "STATE",
            "PRIO",
            "DAILY",
            "MONTHLY",
            "KEY",
            "LAST TEST",
        )
    ]
    for v in views:
        state = ("active" if v.is_active else "inactive") + (",default" if v.is_default else "")
        tested = (
            "never"
            if v.last_tested_at is None
            else (f"{'ok' if v.last_test_success else 'FAILED'} {v.last_tested_at:%Y-%m-%d %H:%M}")
        )
        rows.append(
            (
                str(v.id),
                v.provider_type,
                v.model_name,
                v.display_name,
                ",".join(v.tasks) or "-",
                state,
                str(v.priority),
                _limit(v.daily_token_limit),
                _limit(v.monthly_token_limit),
                v.masked_key,
                tested,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else f"{value:,}"


def cmd_providers_add(settings: Settings, args: argparse.Namespace) -> None:
    key = _key_from_env(args.api_key_env)
    data = ProviderInput(
        provider_type=args.type,
        model_name=args.model,
        display_name=args.name,
        api_key=key,
        description=args.description,
        base_url=args.base_url,
        tasks=_tasks(args.tasks),
        priority=args.priority,
        daily_token_limit=_unlimited(args.daily_limit),
        monthly_token_limit=_unlimited(args.monthly_limit),
        is_active=not args.inactive,
        is_default=args.default,
    )
    view = _provider_admin(settings).create(
        audit.Actor.cli(), data, validate=not args.skip_validation
    )
    tested = "credentials verified" if view.last_test_success else "credentials NOT tested"
    print(
        f"Saved provider config {view.id}: {view.display_name} ({view.provider_type} "
        f"{view.model_name}, key {view.masked_key}, {tested})."
    )


def cmd_providers_edit(settings: Settings, args: argparse.Namespace) -> None:
    """Edit like the console's form: flags not given keep their value; changing --type or
    --base-url needs --api-key-env too (a stored key goes only where it was entered for)."""
    admin = _provider_admin(settings)
    actor = audit.Actor.cli()
    view = admin.get(actor, args.id)
    key = _key_from_env(args.api_key_env) if args.api_key_env else None

    def given(value: object, current: object) -> object:
        return current if value is None else value

    data = ProviderInput(
        provider_type=given(args.type, view.provider_type),  # type: ignore[arg-type]
        model_name=given(args.model, view.model_name),  # type: ignore[arg-type]
        display_name=given(args.name, view.display_name),  # type: ignore[arg-type]
        api_key=key,
        description=given(args.description, view.description),  # type: ignore[arg-type]
        base_url=given(args.base_url, view.base_url),  # type: ignore[arg-type]
        tasks=view.tasks if args.tasks is None else _tasks(args.tasks),
        priority=given(args.priority, view.priority),
        daily_token_limit=given(_unlimited(args.daily_limit), view.daily_token_limit),
        monthly_token_limit=given(_unlimited(args.monthly_limit), view.monthly_token_limit),
        is_active=view.is_active if args.active is None else args.active,
        is_default=view.is_default if args.default is None else args.default,
    )
    saved = admin.update(
        actor, args.id, data, expected_version=view.version, validate=not args.skip_validation
    )
    tested = (
        "credentials verified"
        if saved.last_tested_at != view.last_tested_at and saved.last_test_success
        else "no credential test needed"
        if not args.skip_validation
        else "credentials NOT tested"
    )
    print(
        f"Saved provider config {saved.id}: {saved.display_name} ({saved.provider_type} "
        f"{saved.model_name}, key {saved.masked_key}, {tested})."
    )


def _key_from_env(variable: str) -> str:
    key = os.environ.get(variable, "").strip()
    if not key:
        raise CliError(
            f"environment variable {variable} is empty or not set: put the API key in "
            "it (--api-key-env names the variable, never the key itself)"
        )
    return key


def _tasks(raw: str) -> list[str]:
    return [task for task in raw.split(",") if task.strip()]


def _unlimited(value: str | None) -> str | None:
    """A limit flag's value: `unlimited` (or `none`) clears the limit."""
    if value is not None and value.strip().lower() in ("unlimited", "none"):
        return ""
    return value


def cmd_providers_test(settings: Settings, args: argparse.Namespace) -> None:
    check = _provider_admin(settings).test(audit.Actor.cli(), args.id)
    if not check.ok:
        raise CliError(f"provider config {args.id} failed its test: {check.message}")
    print(f"Provider config {args.id} works: {check.message} ({check.latency_ms} ms)")


def cmd_providers_remove(settings: Settings, args: argparse.Namespace) -> None:
    admin = _provider_admin(settings)
    actor = audit.Actor.cli()
    orphaned = admin.tasks_only_served_by(actor, args.id)
    view = admin.delete(actor, args.id)
    print(f"Removed provider config {view.id} ({view.display_name}).")
    if orphaned:
        print(f"Warning: no active provider serves {', '.join(orphaned)} any more.")


def cmd_seed_from_env(settings: Settings, args: argparse.Namespace) -> None:
    """Store the legacy GEMINI_API_KEY / OPENAI_API_KEY / ANTHROPIC_API_KEY as configs that
    route exactly as the legacy fallback did: every task, in that order, the first as default."""
    admin = _provider_admin(settings)
    actor = audit.Actor.cli()
    existing = admin.list(actor)
    created = []
    for rank, (kind, key_var, model_var, model) in enumerate(LEGACY_PROVIDERS, start=1):
        key = os.environ.get(key_var, "").strip()
        if not key:
            continue
        model_name = (os.environ.get(model_var) or model).removeprefix("models/")
        if duplicate := _stored_with_key(admin, existing, kind, model_name, key):
            print(f"{key_var}: already stored as provider config {duplicate} (skipped).")
            continue
        view = admin.create(
            actor,
            ProviderInput(
                provider_type=kind,
                model_name=model_name,
                display_name=f"{model_name} (from {key_var})",
                api_key=key,
                description=f"Seeded from the {key_var} environment variable.",
                tasks=TASKS,
                priority=rank * 10,
                is_default=not created and not any(v.is_default for v in existing),
            ),
            validate=not args.skip_validation,
        )
        created.append(view)
        print(
            f"{key_var}: stored as provider config {view.id} ({view.display_name}, key "
            f"{view.masked_key}{', default' if view.is_default else ''})."
        )
    if not created:
        raise CliError(
            "nothing to seed: set GEMINI_API_KEY (with GEMINI_MODEL_FAST), OPENAI_API_KEY or "
            "ANTHROPIC_API_KEY, or they are all stored already"
        )


def _stored_with_key(
    admin: ProviderAdmin, views: list[ProviderView], kind: str, model: str, key: str
) -> int | None:
    for view in views:
        same = (view.provider_type, view.model_name, view.key_last4) == (kind, model, key[-4:])
        if same and admin.stored_key_matches(audit.Actor.cli(), view.id, key):
            return view.id
    return None


MAX_DEMO_DAYS, MAX_DEMO_CALLS = 400, 20_000_000


def cmd_demo_data(settings: Settings, args: argparse.Namespace) -> None:
    from core.usage import demo

    if not args.purge and not (0 < args.days <= MAX_DEMO_DAYS and 0 < args.calls <= MAX_DEMO_CALLS):
        raise CliError(f"--days must be 1 to {MAX_DEMO_DAYS} and --calls 1 to {MAX_DEMO_CALLS:,}")
    engine = _migrated_engine(settings)
    admin = ProviderAdmin(make_session_factory(engine), load_cipher(settings))
    if args.purge:
        gone = demo.purge_demo_data(engine, admin, audit.Actor.cli())
        kept = (
            f" ({gone.configs_kept} kept: other usage refers to them)" if gone.configs_kept else ""
        )
        print(
            f"Removed {gone.rows:,} demo usage row(s) and {gone.configs_removed} demo "
            f"config(s){kept}."
        )
        return
    done = demo.add_demo_data(
        engine, admin, audit.Actor.cli(), args.days, args.calls, seed=args.seed
    )
    print(
        f"Added {done.rows:,} demo usage rows from {done.start:%Y-%m-%d %H:%M} to "
        f"{done.end:%Y-%m-%d %H:%M} UTC ({done.configs_created} demo config(s) created, inactive). "
        "Open Usage in the console; `python -m core demo-data --purge` removes them."
    )


def _migrated_engine(settings: Settings) -> Engine:
    engine = make_engine(settings)
    status = schema_status(engine)
    if not status.up_to_date:
        raise CliError(
            f"database schema is at {status.current or 'nothing'}, this code needs "
            f"{status.head}: run `python -m core migrate` first"
        )
    return engine


def _safe_url(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


Command = Callable[[Settings, argparse.Namespace], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="upgrade the database schema to the newest revision")

    keys = commands.add_parser("keys", help="encryption keys for stored secrets")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_commands.add_parser("generate", help="print a new Fernet key")
    keys_commands.add_parser(
        "rotate", help="re-encrypt every stored secret with the newest key (one transaction)"
    )
    providers = commands.add_parser("providers", help="provider configs")
    actions = providers.add_subparsers(dest="providers_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list provider configs (keys shown as …last4)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add = actions.add_parser("add", help="add a provider config after testing its key")
    add.add_argument("--type", required=True, help="gemini, openai or claude")
    add.add_argument("--model", required=True, help="model name, e.g. gemini-2.5-flash")
    add.add_argument("--name", required=True, help="display name")
    add.add_argument(
        "--api-key-env",
        required=True,
        metavar="VAR",
        help="name of the environment variable holding the key (keeps it out of shell history)",
    )
    add.add_argument("--base-url", help="endpoint override (OpenAI-style ones end in /v1)")
    add.add_argument("--tasks", default="", help=f"comma-separated: {','.join(TASKS)}")
    add.add_argument("--default", action="store_true", help="fallback for every task")
    add.add_argument("--priority", default="100", help="lower is tried first")
    add.add_argument("--daily-limit", help="tokens per UTC day (default unlimited)")
    add.add_argument("--monthly-limit", help="tokens per UTC month (default unlimited)")
    add.add_argument("--description", default="")
    add.add_argument("--inactive", action="store_true", help="save it switched off")
    add.add_argument("--skip-validation", action="store_true", help="save without testing")
    edit = actions.add_parser(
        "edit",
        help="change a config like the console's form does (flags not given stay as they are)",
        description="Changing --type or --base-url needs --api-key-env too: a stored key is "
        "only ever sent to the endpoint it was entered for.",
    )
    edit.add_argument("id", type=int)
    edit.add_argument("--type", help="gemini, openai or claude (needs --api-key-env)")
    edit.add_argument("--model", help="model name (tested with the stored key)")
    edit.add_argument("--name", help="display name")
    edit.add_argument("--api-key-env", metavar="VAR", help="environment variable holding a new key")
    edit.add_argument(
        "--base-url", help='endpoint override; "" for the provider\'s own (needs --api-key-env)'
    )
    edit.add_argument("--tasks", help=f'comma-separated: {",".join(TASKS)} ("" for none)')
    edit.add_argument("--priority", help="lower is tried first")
    edit.add_argument("--daily-limit", help="tokens per UTC day, or `unlimited`")
    edit.add_argument("--monthly-limit", help="tokens per UTC month, or `unlimited`")
    edit.add_argument("--description")
    state = edit.add_mutually_exclusive_group()
    state.add_argument("--active", dest="active", action="store_true", default=None)
    state.add_argument("--inactive", dest="active", action="store_false")
    default = edit.add_mutually_exclusive_group()
    default.add_argument(
        "--default",
        dest="default",
        action="store_true",
        default=None,
        help="fallback for every task",
    )
    default.add_argument("--no-default", dest="default", action="store_false")
    edit.add_argument("--skip-validation", action="store_true", help="save without testing")
    for name, text in (("test", "test a saved config's key"), ("remove", "delete a config")):
        actions.add_parser(name, help=text).add_argument("id", type=int)

    seed = commands.add_parser(
        "seed-from-env",
        help="store GEMINI_API_KEY / OPENAI_API_KEY / ANTHROPIC_API_KEY as encrypted configs",
    )
    seed.add_argument("--skip-validation", action="store_true", help="store without testing")

    demo = commands.add_parser(
        "demo-data", help="add realistic sample usage (marked as demo) so the charts show data"
    )
    demo.add_argument("--days", type=int, default=30, help="spread over the last D days")
    demo.add_argument("--calls", type=int, default=20_000, help="number of usage rows")
    demo.add_argument("--seed", type=int, help="random seed, for the same data again")
    demo.add_argument("--purge", action="store_true", help="remove all demo rows and configs")

    users_parser = commands.add_parser("users", help="console accounts")
    account_actions = users_parser.add_subparsers(
        dest="users_command", required=True, metavar="ACTION"
    )
    add_user = account_actions.add_parser(
        "add", help="add an account; the password is prompted for, or read from standard input"
    )
    add_user.add_argument("name", help="username (letters, digits, . _ @ -)")
    add_user.add_argument("--role", required=True, choices=["super_admin", "analyst"])
    add_user.add_argument("--display-name", default="", help="shown in the console")
    add_user.add_argument("--email")
    account_actions.add_parser(
        "unlock", help="clear an account's sign-in throttles (wrong passwords and codes)"
    ).add_argument("name", help="username")
    account_actions.add_parser(
        "reset-mfa", help="forget an account's authenticator app; it must set one up again"
    ).add_argument("name", help="username")
    return parser


def _command(args: argparse.Namespace) -> Command:
    table: dict[tuple[str, str | None], Command] = {
        ("migrate", None): cmd_migrate,
        ("keys", "generate"): cmd_keys_generate,
        ("keys", "rotate"): cmd_keys_rotate,
        ("providers", "list"): cmd_providers_list,
        ("providers", "add"): cmd_providers_add,
        ("providers", "edit"): cmd_providers_edit,
        ("providers", "test"): cmd_providers_test,
        ("providers", "remove"): cmd_providers_remove,
        ("seed-from-env", None): cmd_seed_from_env,
        ("demo-data", None): cmd_demo_data,
        ("users", "add"): cmd_users_add,
        ("users", "unlock"): cmd_users_unlock,
        ("users", "reset-mfa"): cmd_users_reset_mfa,
    }
    action = (
        getattr(args, "keys_command", None)
        or getattr(args, "providers_command", None)
        or getattr(args, "users_command", None)
    )
    return table[(args.command, action)]


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        _command(args)(settings or Settings.from_env(), args)
    except ValidationFailed as exc:
        problems = "; ".join(
            f"{FLAGS.get(name, name)}: {text}" for name, text in exc.errors.items()
        )
        print(f"error: not saved: {problems}", file=sys.stderr)
        return 1
    except (CliError, ConfigError, DecryptionError, AdminError, accounts.AuthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        reason = " ".join(str(exc.orig).split())  # drivers answer in several lines
        print(f"error: cannot reach the database: {reason}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        # Only the driver's first line: never the statement or its parameters (ciphertext).
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        print(f"error: the database refused this, nothing was saved: {reason}", file=sys.stderr)
        return 1
    return 0
