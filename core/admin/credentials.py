"""Credential tests: where a key would be sent, proving it there, and the audit row every
test writes (saved or not, with the target host and its outcome)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from core import audit
from core.access import Actor
from core.admin.validation import (
    AdminError,
)
from core.models import ProviderConfig, utcnow
from core.providers import CredentialCheck, ProviderFactory
from core.providers.egress import Allowlist

T = TypeVar("T")


Validator = Callable[[str, str, str | None, str | None], Awaitable[CredentialCheck]]


# Where each SDK sends a config without a base_url (named in audit rows of credential tests).
DEFAULT_HOSTS = {
    "openai": "api.openai.com",
    "claude": "api.anthropic.com",
    "gemini": "generativelanguage.googleapis.com",
}


class CredentialsRejected(AdminError):
    """The provider refused the key (or model); nothing was saved."""

    def __init__(self, check: CredentialCheck) -> None:
        self.check = check
        super().__init__(f"Not saved: {check.message}")


def target_host(provider_type: str, base_url: str | None) -> str:
    """The host a config's key is sent to (the SDK's own default when no base_url is set)."""
    if base_url:
        return urlsplit(base_url).hostname or base_url
    return DEFAULT_HOSTS.get(provider_type, provider_type)


def audit_test(
    session: Session,
    actor: Actor,
    context: str,
    config_id: int | None,
    target: Mapping[str, Any],
    check: CredentialCheck,
) -> None:
    """Every credential test is audited: where the key went and what came back."""
    audit.record(
        session,
        actor,
        "provider.test",
        target_type="provider_config",
        target_id=config_id,
        details={
            "context": context,
            "provider_type": target["provider_type"],
            "model_name": target["model_name"],
            "host": target_host(target["provider_type"], target["base_url"]),
            "ok": check.ok,
            "latency_ms": check.latency_ms,
            "message": check.message[:300],
        },
    )


async def validate_with_factory(
    provider_type: str,
    api_key: str,
    base_url: str | None,
    model_name: str | None,
    *,
    allowlist: Allowlist | None,
) -> CredentialCheck:
    return await ProviderFactory.validate_credentials(
        provider_type, api_key, base_url, model_name, allowlist=allowlist
    )


def run_blocking(awaitable: Awaitable[T]) -> T:
    """Run a coroutine from synchronous code (Streamlit script thread, CLI), on a worker thread
    when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(awaitable)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, awaitable).result()  # type: ignore[arg-type]


def record_test(row: ProviderConfig, check: CredentialCheck | None) -> None:
    if check is not None:
        row.last_tested_at = utcnow()
        row.last_test_success = check.ok
        row.last_test_message = check.message
