"""`python -m core`: the operator's command line.

Each command exits non-zero with one clear line on bad input, and every change it makes writes
an audit row with actor_label `cli:<os user>`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from core import audit
from core.config import ConfigError, Settings
from core.crypto import DecryptionError, generate_key, load_cipher, rotate_all_secrets
from core.db import make_engine, make_session_factory, schema_status, session_scope, upgrade


class CliError(Exception):
    """A failure the operator can act on; printed as one line."""


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> None:
    load_cipher(settings)  # production without a key fails here, before anything starts
    engine = make_engine(settings)
    upgrade(engine)
    status = schema_status(engine)
    print(f"Database {_safe_url(settings)} is at revision {status.current} (head).")


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
    return parser


def _command(args: argparse.Namespace) -> Command:
    table: dict[tuple[str, str | None], Command] = {
        ("migrate", None): cmd_migrate,
        ("keys", "generate"): cmd_keys_generate,
        ("keys", "rotate"): cmd_keys_rotate,
    }
    return table[(args.command, getattr(args, "keys_command", None))]


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        _command(args)(settings or Settings.from_env(), args)
    except (CliError, ConfigError, DecryptionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        reason = " ".join(str(exc.orig).split())  # drivers answer in several lines
        print(f"error: cannot reach the database: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
