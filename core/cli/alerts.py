"""`alerts …`: alert rules through the same service and rules as the console's Alerts page
(core.alerts), and a watcher for deployments where no console runs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading

from sqlalchemy.orm import Session, sessionmaker

from core.access import Actor
from core.alerts import (
    AlertInput,
    AlertWatcher,
    Outbox,
    add_rule,
    list_rules,
    remove_rule,
    send_test,
)
from core.cli.common import CliError, migrated_engine
from core.config import Settings
from core.crypto import load_cipher
from core.db import make_session_factory, session_scope
from core.models import LIMIT_KINDS

ALL, NONE = "all", "none"


def _context(settings: Settings) -> tuple[sessionmaker[Session], Outbox]:
    sessions = make_session_factory(migrated_engine(settings))
    return sessions, Outbox.from_settings(settings, load_cipher(settings))


def cmd_alerts_list(settings: Settings, args: argparse.Namespace) -> None:
    sessions, _ = _context(settings)
    with session_scope(sessions) as session:
        rules = list_rules(session, Actor.cli())
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "channel": r.channel,
                        "target": r.target_hint,
                        "config_id": r.config_id,
                        "limits": list(r.limit_kinds),
                        "thresholds": list(r.thresholds),
                        "error_rate_percent": r.error_rate_percent,
                        "error_min_calls": r.error_min_calls,
                    }
                    for r in rules
                ],
                indent=2,
            )
        )
        return
    if not rules:
        print("No alert rules yet. Add one with `python -m core alerts add --help`.")
        return
    for r in rules:
        print(f"{r.id:>4}  {r.channel:<7}  {r.target_hint}  ({r.config_name}): {r.watches}")


def cmd_alerts_add(settings: Settings, args: argparse.Namespace) -> None:
    if args.webhook_env is not None:
        args.webhook = os.environ.get(args.webhook_env, "").strip()
        if not args.webhook:
            raise CliError(f"--webhook-env: the environment variable {args.webhook_env} is empty")
    if args.webhook is None and args.email is None:
        raise CliError("give --webhook URL (with --slack for Slack) or --email ADDRESS")
    if args.slack and args.webhook is None:
        raise CliError("--slack goes with --webhook URL (Slack's incoming-webhook URL)")
    channel = "email" if args.email is not None else "slack" if args.slack else "webhook"
    limits = args.limits.strip().lower()
    kinds = LIMIT_KINDS if limits == ALL else () if limits == NONE else limits.split(",")
    sessions, outbox = _context(settings)
    data = AlertInput(
        channel=channel,
        target=args.email if args.email is not None else args.webhook,
        config_id=args.config,
        limit_kinds=kinds,
        thresholds=args.threshold,
        error_rate_percent=args.error_rate,
        error_min_calls=args.min_calls,
    )
    with session_scope(sessions) as session:
        view = add_rule(session, Actor.cli(), outbox, data)
    print(f"Added alert rule {view.id}: {view.channel} to {view.target_hint} ({view.config_name})")
    print(f"  watches {view.watches}")
    print(f"  try it: python -m core alerts test {view.id}")


def cmd_alerts_remove(settings: Settings, args: argparse.Namespace) -> None:
    sessions, _ = _context(settings)
    with session_scope(sessions) as session:
        print(remove_rule(session, Actor.cli(), args.id))


def cmd_alerts_test(settings: Settings, args: argparse.Namespace) -> None:
    sessions, outbox = _context(settings)
    with session_scope(sessions) as session:
        result = send_test(session, Actor.cli(), outbox, args.id)
    if not result.ok:
        raise CliError(result.message)
    print(result.message)


def cmd_alerts_check(settings: Settings, _args: argparse.Namespace) -> None:
    sessions, outbox = _context(settings)
    done = AlertWatcher(sessions, outbox).run_once()
    sent = sum(o.status == "sent" for o in done.outcomes)
    print(
        f"{done.claimed} new alert(s) due; {sent} of {len(done.outcomes)} delivery attempt(s) "
        "succeeded."
    )
    for outcome in done.outcomes:
        if outcome.error:
            print(f"  alert {outcome.delivery_id}: {outcome.status}: {outcome.error}")


def cmd_alerts_watch(settings: Settings, _args: argparse.Namespace) -> None:
    sessions, outbox = _context(settings)
    watcher = AlertWatcher(sessions, outbox, settings.alert_interval_s)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"Watching for alerts every {settings.alert_interval_s:g} s; Ctrl-C or SIGTERM stops.",
        flush=True,
    )
    watcher.start()
    stop.wait()
    watcher.stop()
