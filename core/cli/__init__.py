"""`python -m core`: the operator's command line.

Each command exits non-zero with one clear line on bad input, and every change it makes writes
an audit row with actor_label `cli:<os user>`.
"""

# The grammar is in parser.py, the commands in operators.py, providers.py and usage.py.

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError, OperationalError

from core import accounts
from core.admin import AdminError, ValidationFailed
from core.cli.alerts import (
    cmd_alerts_add,
    cmd_alerts_check,
    cmd_alerts_list,
    cmd_alerts_remove,
    cmd_alerts_test,
    cmd_alerts_watch,
)
from core.cli.common import FLAGS, CliError, Command
from core.cli.operators import (
    cmd_demo_data,
    cmd_keys_generate,
    cmd_keys_rotate,
    cmd_migrate,
    cmd_users_add,
    cmd_users_reset_mfa,
    cmd_users_unlock,
)
from core.cli.parser import build_parser
from core.cli.providers import (
    cmd_providers_add,
    cmd_providers_edit,
    cmd_providers_list,
    cmd_providers_remove,
    cmd_providers_test,
    cmd_seed_from_env,
)
from core.cli.usage import cmd_usage_prune
from core.config import ConfigError, Settings
from core.crypto import DecryptionError


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
        ("usage", "prune"): cmd_usage_prune,
        ("alerts", "list"): cmd_alerts_list,
        ("alerts", "add"): cmd_alerts_add,
        ("alerts", "remove"): cmd_alerts_remove,
        ("alerts", "test"): cmd_alerts_test,
        ("alerts", "check"): cmd_alerts_check,
        ("alerts", "watch"): cmd_alerts_watch,
    }
    action = (
        getattr(args, "keys_command", None)
        or getattr(args, "providers_command", None)
        or getattr(args, "users_command", None)
        or getattr(args, "usage_command", None)
        or getattr(args, "alerts_command", None)
    )
    return table[(args.command, action)]


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser(__doc__ or "").parse_args(argv)
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
