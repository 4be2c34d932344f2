"""The few provider-neutral errors every adapter maps its SDK's exceptions to, and what is
kept of a provider's answer: its JSON `error.message`, redacted and cut to MESSAGE_LIMIT
characters; a non-JSON body keeps only the status code."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import httpx2

from core.providers.redaction import redact

MESSAGE_LIMIT = 200


class ProviderError(Exception):
    """A provider call failed. `message` is safe to show and store: secrets are redacted.

    `fallback` tells core.routing whether another provider may succeed where this one failed
    (True), or whether the request itself is at fault and would fail anywhere (False).
    """

    fallback: ClassVar[bool] = True
    kind: ClassVar[str] = "provider_error"

    def __init__(self, provider: str, message: str, status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        super().__init__()
        self.with_message(message)

    def with_message(self, message: str) -> None:
        """Replace the message (and so str(self)), e.g. with its redacted form."""
        self.message = message
        where = f"{self.provider} answered {self.status}" if self.status else self.provider
        self.args = (f"{where}: {message}",)


class AuthenticationFailed(ProviderError):
    """The key was refused (401/403): wrong, revoked, or without access to this model."""

    kind = "authentication"


class ModelNotFound(ProviderError):
    """The provider does not know the configured model (404)."""

    kind = "model_not_found"


class RateLimited(ProviderError):
    """429 after the SDK's own retries; `retry_after` is the provider's hint in seconds."""

    kind = "rate_limited"

    def __init__(
        self,
        provider: str,
        message: str,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(provider, message, status)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """5xx or the connection failed, after the SDK's own retries."""

    kind = "unavailable"


class ProviderTimeout(ProviderUnavailable):
    """No answer within the per-call timeout."""

    kind = "timeout"


class UnexpectedResponse(ProviderError):
    """The provider answered, but not in the shape its API promises."""

    kind = "unexpected_response"


class Redirected(ProviderError):
    """The endpoint answered 3xx. Redirects are never followed (the key would go along), and the
    next provider may serve: the base URL is misconfigured, the request is fine."""

    kind = "redirect"


class EndpointRefused(ProviderError):
    """The egress policy refused the endpoint's address (core.providers.egress): no request
    was sent."""

    kind = "egress_refused"


class BadRequest(ProviderError):
    """The request itself is wrong (too long, unsupported image, bad parameter): not retried,
    not sent elsewhere."""

    fallback = False
    kind = "bad_request"


def error_for_status(
    provider: str, status: int, message: str, retry_after: float | None = None
) -> ProviderError:
    """The provider-neutral error for an HTTP status (messages already redacted)."""
    if 300 <= status < 400:
        return Redirected(provider, message, status)
    if status < 300:
        return UnexpectedResponse(provider, message, status)
    if status in (401, 403):
        return AuthenticationFailed(provider, message, status)
    if status == 404:
        return ModelNotFound(provider, message, status)
    if status == 408:
        return ProviderTimeout(provider, message, status)
    if status == 429:
        return RateLimited(provider, message, status, retry_after)
    if status >= 500:
        return ProviderUnavailable(provider, message, status)
    return BadRequest(provider, message, status)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (HTTP dates are rare from these APIs)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def status_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """The error for a non-2xx answer, keeping only what is safe of it (see `provider_message`).

    A 3xx names only the host it pointed to: redirects are not followed.
    """
    if 300 <= status < 400:
        return Redirected(provider, redirect_message(headers.get("location")), status)
    message = provider_message(status, body, secrets)
    return error_for_status(
        provider, status, message, parse_retry_after(headers.get("retry-after"))
    )


def redirect_message(location: str | None) -> str:
    """What to tell a person about a redirect to `location` (its host only)."""
    if not location:
        target = "without a Location"
    else:
        try:
            host = httpx2.URL(location.strip()).host
        except (httpx2.InvalidURL, TypeError, ValueError):
            host = ""
        target = f"to {clip(host, 100)}" if host else "to another path"
    return (
        f"the endpoint redirected ({target}); redirects are not followed — "
        "set the base URL to the final address"
    )


def provider_message(status: int, body: bytes | str | None, secrets: Iterable[str] = ()) -> str:
    """What is kept of an error body: the provider's JSON `error.message`, redacted and cut to
    MESSAGE_LIMIT characters; for any other body only the status ("HTTP 404 (...)").

    A body is never kept raw: it may be an HTML or Markdown page (links, scripts), or echo the
    key or the request.
    """
    if not body:
        return f"HTTP {status} (no body)"
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return f"HTTP {status} (the body was not JSON)"
    message = None
    if isinstance(data, dict):
        error = data.get("error")
        for holder in (error, data):
            if isinstance(holder, dict) and isinstance(holder.get("message"), str):
                message = holder["message"]
                break
    if not message or not message.strip():
        return f"HTTP {status} (no error message in the body)"
    return clip(redact(message, secrets))


def response_body(response: Any) -> bytes | None:
    """The body an SDK already read from an httpx2.Response, or None."""
    try:
        content = response.content
    except (httpx2.ResponseNotRead, AttributeError):
        return None
    return content if isinstance(content, bytes) else None


_WHITESPACE = re.compile(r"\s+")


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis when longer."""
    text = "".join(c if c.isprintable() else " " for c in text)
    text = _WHITESPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
