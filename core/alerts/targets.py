"""What an alert rule may be: where it sends (a webhook, a Slack incoming webhook, an email
address), what it watches, at which thresholds. The one place these fields are checked, for the
console's form and the command line alike; refusals name the field (ValidationFailed).

A webhook URL obeys the provider base URL rule (core.providers.egress): its host must be public
unless AI_CONSOLE_BASE_URL_ALLOWLIST lists it, checked here and again on every connection. An
email alert needs AI_CONSOLE_SMTP_URL, whose host obeys the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.admin.validation import ValidationFailed
from core.config import EMAIL_ADDRESS
from core.models import LIMIT_KINDS, AlertChannel, AlertKind
from core.providers.egress import Allowlist, EgressRefused, Resolver, check_base_url, vet_host

DEFAULT_THRESHOLDS = (80, 95, 100)
DEFAULT_MIN_CALLS = 20
MAX_TARGET = 2000
WEBHOOK = "webhook URL"
SMTP_SERVER = "SMTP server"

KIND_NAMES = {
    AlertKind.TOKENS_DAY.value: "daily token limit",
    AlertKind.TOKENS_MONTH.value: "monthly token limit",
    AlertKind.USD_DAY.value: "daily budget",
    AlertKind.USD_MONTH.value: "monthly budget",
    AlertKind.ERROR_RATE.value: "error rate",
}


@dataclass(frozen=True)
class AlertInput:
    """What a form or the command line hands in, as typed. `target` is a webhook URL (channels
    webhook and slack) or an email address; a URL may carry a token, so it is never shown."""

    channel: str
    target: str = field(repr=False)
    config_id: int | None = None  # None: every config
    limit_kinds: Sequence[str] = LIMIT_KINDS
    thresholds: str | Sequence[int] = DEFAULT_THRESHOLDS
    error_rate_percent: str | int | None = None  # None or "": no error-rate alert
    error_min_calls: str | int = DEFAULT_MIN_CALLS


@dataclass(frozen=True)
class CleanRule:
    channel: str
    target: str = field(repr=False)
    target_hint: str
    config_id: int | None
    limit_kinds: str  # comma-separated, in LIMIT_KINDS order
    thresholds: str  # comma-separated ascending percentages
    error_rate_percent: int | None
    error_min_calls: int


def clean(data: AlertInput, check_target: TargetCheck) -> CleanRule:
    """The rule as stored, or ValidationFailed with a message per field."""
    errors: dict[str, str] = {}
    channel = str(data.channel).strip().lower()
    if channel not in {c.value for c in AlertChannel}:
        errors["channel"] = "choose webhook, slack or email"
    target, hint = "", ""
    try:
        target, hint = check_target(channel, data.target)
    except ValueError as exc:
        if "channel" not in errors:
            errors["target"] = str(exc)
    kinds = [str(k).strip().lower() for k in data.limit_kinds if str(k).strip()]
    unknown = [k for k in kinds if k not in LIMIT_KINDS]
    if unknown:
        errors["limit_kinds"] = (
            f"unknown limit {unknown[0]!r}; choose from {', '.join(LIMIT_KINDS)}"
        )
    thresholds: list[int] = []
    try:
        thresholds = parse_thresholds(data.thresholds)
    except ValueError as exc:
        errors["thresholds"] = str(exc)
    level = _whole(data.error_rate_percent, "error_rate_percent", errors, 1, 100, optional=True)
    min_calls = _whole(data.error_min_calls, "error_min_calls", errors, 1, 1_000_000)
    if not kinds and level is None and not errors:
        errors["limit_kinds"] = "choose at least one limit to watch, or an error rate"
    if errors:
        raise ValidationFailed(errors)
    return CleanRule(
        channel=channel,
        target=target,
        target_hint=hint,
        config_id=data.config_id,
        limit_kinds=",".join(k for k in LIMIT_KINDS if k in kinds),
        thresholds=",".join(str(t) for t in thresholds),
        error_rate_percent=level,
        error_min_calls=min_calls if min_calls is not None else DEFAULT_MIN_CALLS,
    )


def parse_thresholds(raw: str | Sequence[int]) -> list[int]:
    """ "80,95,100" (or a sequence of numbers) as ascending distinct percentages of a limit."""
    parts = raw.split(",") if isinstance(raw, str) else [str(p) for p in raw]
    values: set[int] = set()
    for part in (p.strip().rstrip("%") for p in parts):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 100:
            raise ValueError(
                f"{part!r} is not a percentage from 1 to 100; use e.g. 80,95,100 (100 is the "
                "limit itself)"
            )
        values.add(int(part))
    if not values:
        raise ValueError("give at least one percentage, e.g. 80,95,100")
    return sorted(values)


def _whole(
    raw: str | int | None,
    name: str,
    errors: dict[str, str],
    low: int,
    high: int,
    *,
    optional: bool = False,
) -> int | None:
    text = "" if raw is None else str(raw).strip().rstrip("%")
    if not text and optional:
        return None
    if not re.fullmatch(r"\d{1,9}", text) or not low <= int(text) <= high:
        errors[name] = f"must be a whole number from {low} to {high:,}"
        return None
    return int(text)


class TargetCheck:
    """Checks a target for its channel: `(target, hint)` as stored, or ValueError saying why.

    `allowlist` and `resolve` are the egress policy's (core.providers.egress); `smtp_host` is
    AI_CONSOLE_SMTP_URL's host and port, None when email is not configured."""

    def __init__(
        self, allowlist: Allowlist, resolve: Resolver, smtp_host: tuple[str, int] | None
    ) -> None:
        self._allowlist = allowlist
        self._resolve = resolve
        self._smtp_host = smtp_host

    def __call__(self, channel: str, raw: str) -> tuple[str, str]:
        target = (raw or "").strip()
        if not target:
            raise ValueError("enter a webhook URL" if channel != "email" else "enter an address")
        if len(target) > MAX_TARGET or any(ord(c) < 32 or ord(c) == 127 for c in target):
            raise ValueError(f"must be at most {MAX_TARGET} characters, on one line")
        if channel == AlertChannel.EMAIL.value:
            return self._email(target), target
        shown = hint(target)
        try:
            port = urlsplit(target).port
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"{WEBHOOK} {shown!r} has no valid port (1 to 65535)")
        try:
            check_base_url(target, self._allowlist, self._resolve, subject=WEBHOOK, shown=shown)
        except EgressRefused as exc:
            raise ValueError(str(exc)) from None
        return target, shown

    def _email(self, address: str) -> str:
        if not EMAIL_ADDRESS.fullmatch(address):
            raise ValueError("enter one email address like ops@example.com")
        if self._smtp_host is None:
            raise ValueError(
                "email alerts need AI_CONSOLE_SMTP_URL and AI_CONSOLE_ALERT_FROM set where the "
                "console and the alert watcher run"
            )
        host, port = self._smtp_host
        try:
            vet_host(host, port, self._allowlist, self._resolve, subject=SMTP_SERVER)
        except EgressRefused as exc:
            raise ValueError(f"{exc} (AI_CONSOLE_SMTP_URL)") from None
        return address


def hint(url: str) -> str:
    """What the console shows of a webhook URL: its host and the last 4 characters of the rest
    (a Slack or Teams URL carries its token in the path)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a URL, or not a port: say nothing of it but its scheme
        return f"{url.split(':', 1)[0][:10]}://…" if "://" in url else "…"
    rest = url.split(parts.netloc, 1)[-1].rstrip("/") if parts.netloc else url
    tail = f"/…{rest[-4:]}" if len(rest) > 4 else rest
    return f"{parts.scheme}://{parts.hostname or ''}{port}{tail}"
