"""`providers …` and `seed-from-env`: provider configs through the same service and rules as
the console's form (core.admin)."""

from __future__ import annotations

import argparse
import json
import os
from decimal import Decimal

from core.access import Actor
from core.admin import (
    ProviderAdmin,
    ProviderInput,
    ProviderView,
)
from core.cli.common import CliError, migrated_engine
from core.config import Settings
from core.crypto import (
    load_cipher,
)
from core.db import make_session_factory
from core.models import TASKS
from core.pricing import format_usd, to_micro_usd
from core.routing import LEGACY_PROVIDERS


def _provider_admin(settings: Settings) -> ProviderAdmin:
    engine = migrated_engine(settings)
    return ProviderAdmin(make_session_factory(engine), load_cipher(settings))


def cmd_providers_list(settings: Settings, args: argparse.Namespace) -> None:
    views = _provider_admin(settings).list(Actor.cli())
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
                v.model_name if args.wide else _cut(v.model_name, CUT_AT),
                v.display_name if args.wide else _cut(v.display_name, CUT_AT),
                ",".join(v.tasks) or "-",
                state,
                str(v.priority),
                _limit(v.daily_token_limit, v.daily_budget_usd),
                _limit(v.monthly_token_limit, v.monthly_budget_usd),
                v.masked_key,
                tested,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _limit(tokens: int | None, usd: Decimal | None) -> str:
    """A period's limits: "50,000" (tokens), "$2.50", "50,000, $2.50" or "unlimited"."""
    parts = [f"{tokens:,}"] if tokens is not None else []
    if usd is not None:
        parts.append(format_usd(to_micro_usd(usd) or 0))
    return ", ".join(parts) or "unlimited"


CUT_AT = 28  # longer names and models are cut in the table (`--wide` or `--json`: whole)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


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
        daily_budget_usd=_unlimited(args.daily_budget_usd),
        monthly_budget_usd=_unlimited(args.monthly_budget_usd),
        is_active=not args.inactive,
        is_default=args.default,
    )
    view = _provider_admin(settings).create(Actor.cli(), data, validate=not args.skip_validation)
    tested = "credentials verified" if view.last_test_success else "credentials NOT tested"
    print(
        f"Saved provider config {view.id}: {view.display_name} ({view.provider_type} "
        f"{view.model_name}, key {view.masked_key}, {tested})."
    )


def cmd_providers_edit(settings: Settings, args: argparse.Namespace) -> None:
    """Edit like the console's form: flags not given keep their value; changing --type or
    --base-url needs --api-key-env too (a stored key goes only where it was entered for)."""
    admin = _provider_admin(settings)
    actor = Actor.cli()
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
        daily_budget_usd=given(_unlimited(args.daily_budget_usd), view.daily_budget_usd),
        monthly_budget_usd=given(_unlimited(args.monthly_budget_usd), view.monthly_budget_usd),
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
    """A limit or budget flag's value: `unlimited` (or `none`) clears it."""
    if value is not None and value.strip().lower() in ("unlimited", "none"):
        return ""
    return value


def cmd_providers_test(settings: Settings, args: argparse.Namespace) -> None:
    check = _provider_admin(settings).test(Actor.cli(), args.id)
    if not check.ok:
        raise CliError(f"provider config {args.id} failed its test: {check.message}")
    print(f"Provider config {args.id} works: {check.message} ({check.latency_ms} ms)")


def cmd_providers_remove(settings: Settings, args: argparse.Namespace) -> None:
    admin = _provider_admin(settings)
    actor = Actor.cli()
    orphaned = admin.tasks_only_served_by(actor, args.id)
    view = admin.delete(actor, args.id)
    print(f"Removed provider config {view.id} ({view.display_name}).")
    if orphaned:
        print(f"Warning: no active provider serves {', '.join(orphaned)} any more.")


def cmd_seed_from_env(settings: Settings, args: argparse.Namespace) -> None:
    """Store the legacy GEMINI_API_KEY / OPENAI_API_KEY / ANTHROPIC_API_KEY as configs that
    route exactly as the legacy fallback did: every task, in that order, the first as default."""
    admin = _provider_admin(settings)
    actor = Actor.cli()
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
        if same and admin.stored_key_matches(Actor.cli(), view.id, key):
            return view.id
    return None
