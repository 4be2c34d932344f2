"""The command line's grammar: every command, flag and help text."""

from __future__ import annotations

import argparse

from core.models import TASKS


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=description)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="upgrade the database schema to the newest revision")

    keys = commands.add_parser("keys", help="encryption keys for stored secrets")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_commands.add_parser("generate", help="print a new Fernet key")
    keys_commands.add_parser(
        "rotate", help="re-encrypt every stored secret with the newest key (one transaction)"
    )
    _provider_commands(commands)

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

    _user_commands(commands)
    _usage_commands(commands)
    _alert_commands(commands)
    return parser


def _usage_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("usage", help="usage rows")
    actions = usage.add_subparsers(dest="usage_command", required=True, metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        help="delete raw usage rows older than an age, in batches; the rollups keep their sums",
        description="Deletes the raw usage rows created before the UTC midnight at or before "
        "now minus the age. The Usage page's totals do not change; latency percentiles of "
        "pruned days come from histograms (marked ≈). Quota counters are not touched.",
    )
    prune.add_argument(
        "--older-than",
        metavar="AGE",
        help="an age in days, e.g. 400d (at least 1d); default AI_CONSOLE_USAGE_RETENTION_DAYS",
    )
    prune.add_argument("--dry-run", action="store_true", help="count the rows, delete nothing")
    prune.add_argument(
        "--batch-size", default="5000", metavar="N", help="rows per delete transaction"
    )


def _provider_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    providers = commands.add_parser("providers", help="provider configs")
    actions = providers.add_subparsers(dest="providers_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list provider configs (keys shown as …last4)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument(
        "--wide", action="store_true", help="long names and models in full (cut at 28 otherwise)"
    )
    _add_command(actions)
    _edit_command(actions)
    for name, text in (("test", "test a saved config's key"), ("remove", "delete a config")):
        actions.add_parser(name, help=text).add_argument("id", type=int)


def _add_command(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    add.add_argument("--daily-budget-usd", metavar="USD", help="dollars per UTC day (default none)")
    add.add_argument(
        "--monthly-budget-usd", metavar="USD", help="dollars per UTC month (default none)"
    )
    add.add_argument("--description", default="")
    add.add_argument("--inactive", action="store_true", help="save it switched off")
    add.add_argument("--skip-validation", action="store_true", help="save without testing")


def _edit_command(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    edit.add_argument("--daily-budget-usd", metavar="USD", help="dollars per UTC day, or `none`")
    edit.add_argument(
        "--monthly-budget-usd", metavar="USD", help="dollars per UTC month, or `none`"
    )
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


def _user_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _alert_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alerts = commands.add_parser(
        "alerts", help="alerts before a limit is hit (webhook, Slack, email)"
    )
    actions = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list alert rules (targets shown as a hint)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add = actions.add_parser(
        "add",
        help="add an alert rule",
        description="Send an alert when a config's token limit or dollar budget reaches each "
        "threshold (once per threshold per day or month), and/or when its error rate over the "
        "last 15 minutes is above a level. Webhook and SMTP hosts must be public unless "
        "AI_CONSOLE_BASE_URL_ALLOWLIST lists them.",
    )
    target = add.add_mutually_exclusive_group()
    target.add_argument("--webhook", metavar="URL", help="POST a JSON body to this URL")
    target.add_argument(
        "--webhook-env",
        metavar="VAR",
        help="the webhook URL from this environment variable (keeps a Slack URL's token out "
        "of shell history)",
    )
    target.add_argument("--email", metavar="ADDRESS", help="email through AI_CONSOLE_SMTP_URL")
    add.add_argument(
        "--slack",
        action="store_true",
        help="the webhook is a Slack incoming webhook (it gets {text})",
    )
    add.add_argument("--config", type=int, metavar="ID", help="one config (default: every config)")
    add.add_argument(
        "--limits",
        default="all",
        help="limits to watch: all (default), none, or some of "
        "tokens_day,tokens_month,usd_day,usd_month",
    )
    add.add_argument(
        "--threshold",
        default="80,95,100",
        metavar="PERCENTS",
        help="percentages of a limit at which to alert (default 80,95,100)",
    )
    add.add_argument(
        "--error-rate", metavar="PERCENT", help="also alert above this error rate (15 minutes)"
    )
    add.add_argument(
        "--min-calls", default="20", help="calls in 15 minutes before the error rate counts"
    )
    for name, text in (("remove", "delete an alert rule"), ("test", "send a test alert now")):
        actions.add_parser(name, help=text).add_argument("id", type=int)
    actions.add_parser("check", help="claim and send what is due now, once (for cron)")
    actions.add_parser("watch", help="check every AI_CONSOLE_ALERT_INTERVAL_S until stopped")
