"""What every provider adapter shares: the result type, the errors, redaction, the base class.

An adapter is handed a ready SDK client (built by core.providers.factory from the decrypted key and
an optional base_url) and only turns our request into that SDK's call and its response into a
`GenerationResult`. SDK exceptions are mapped in one place per adapter (`_map_error`) into the few
provider-neutral errors below; callers never see an SDK's own exception type, and no message we
raise contains an API key or bearer token.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, quote_plus

import httpx2

from core.models import ProviderType
from core.providers.egress import refusal_in

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_OUTPUT_TOKENS = 1024
MESSAGE_LIMIT = 200
"""At most this many characters of a provider's error message are kept (then an ellipsis)."""

T = TypeVar("T")


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationResult:
    """One answer, with the token usage the provider itself reported.

    Adapters fill text, provider, model and usage; core.routing adds config_id, cost_usd and the
    failed attempts that came before this answer.
    """

    text: str
    provider_type: str
    model_name: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    latency_ms: int
    config_id: int | None = None
    cost_usd: Decimal | None = None
    attempts: tuple[Any, ...] = field(default=())

    @property
    def model(self) -> str:
        return self.model_name


@dataclass(frozen=True)
class CredentialCheck:
    """The outcome of a credential test: ok or not, and a message a person can act on."""

    ok: bool
    message: str
    latency_ms: int

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class Reply:
    """What an adapter extracts from its SDK's response."""

    text: str
    model_name: str
    usage: Usage


@dataclass(frozen=True)
class Image:
    data: bytes
    mime_type: str


# --- errors ----------------------------------------------------------------------------------


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


# --- redaction -------------------------------------------------------------------------------

_SECRET_PATTERNS = re.compile(
    r"(?i)(bearer\s+)[^\s,;\"']+"  # Authorization headers
    r"|(?<![\w-])sk-[\w-]{6,}"  # OpenAI and Anthropic keys (sk-..., sk-ant-...)
    r"|AIza[\w-]{10,}"  # Google API keys
    r"|((?:api[_-]?key|key|x-goog-api-key|x-api-key)[\"']?\s*[=:]\s*[\"']?)[^\s&,;\"']+"
)


MASK = "[redacted]"
MIN_FRAGMENT = 8
_REPEATED_MASK = re.compile(r"(?:\[redacted\])+")
"""A run of this many characters of a secret, anywhere in a text, is masked as the secret."""


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets and anything shaped like an API key or bearer token masked.

    For each secret, its URL-encoded forms and any run of MIN_FRAGMENT or more of its characters
    go too (a provider may quote part of a key it refused).
    """
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        forms = [secret, *{quote(secret, safe=""), quote_plus(secret)} - {secret}]
        for form in sorted(forms, key=len, reverse=True):  # whole copies first, longest first
            text = text.replace(form, MASK)
        for form in forms:  # then parts: the key's own characters before its encoded forms
            if len(form) >= MIN_FRAGMENT:
                text = _mask_fragments(text, form)
    return _REPEATED_MASK.sub(MASK, _SECRET_PATTERNS.sub(_mask, text))


def _mask_fragments(text: str, secret: str) -> str:
    """Mask every run of MIN_FRAGMENT+ characters of `secret` in `text`, longest match first.

    A set of the secret's n-grams tells in O(1) whether a match can start at a position; only
    then is it extended. Scanning resumes n-1 characters before a match's end, so a second run
    overlapping it is found too (and merged). Cost: O(len(text)) lookups, plus O(len(secret)²)
    per match.
    """
    n = MIN_FRAGMENT
    grams = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    spans: list[list[int]] = []
    i = 0
    while i <= len(text) - n:
        if text[i : i + n] not in grams:
            i += 1
            continue
        end = i + n
        while end < len(text) and text[i : end + 1] in secret:
            end += 1
        if spans and i <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([i, end])
        i = max(i + 1, end - n + 1)
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in spans:
        out += [text[last:start], MASK]
        last = end
    out.append(text[last:])
    return "".join(out)


def _mask(match: re.Match[str]) -> str:
    prefix = match.group(1) or match.group(2) or ""
    return f"{prefix}[redacted]"


# --- the adapter base --------------------------------------------------------------------------


class AIProvider(ABC):
    """One provider's API behind a common, async interface.

    Subclasses set the class attributes and implement `_reply`, `_check_model` and `_map_error`.
    """

    provider_type: ClassVar[ProviderType]
    supports_images: ClassVar[bool] = True
    image_mime_types: ClassVar[frozenset[str]] = frozenset(
        {"image/png", "image/jpeg", "image/webp", "image/gif"}
    )
    max_image_bytes: ClassVar[int] = 20 * 1024 * 1024
    known_models: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    @abstractmethod
    def build_client(
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        max_retries: int,
        http_client: Any,
    ) -> Any:
        """The SDK client for a key (and base_url), sending through `http_client`: an
        httpx2.AsyncClient from core.providers.egress.egress_client (ProviderFactory makes sure)."""

    def __init__(self, client: Any, model_name: str, secret: str, http_client: Any = None) -> None:
        """`http_client`, when given, is the adapter's own connection pool: aclose() closes it."""
        self.client = client
        self.model_name = model_name
        self._secret = secret
        self._http_client = http_client

    def __repr__(self) -> str:  # never show the client (it holds the key)
        return f"{type(self).__name__}(model_name={self.model_name!r})"

    async def generate_content(
        self,
        prompt: str,
        system_prompt: str | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> GenerationResult:
        """Answer a text prompt."""
        return await self._generate(prompt, system_prompt, None, max_output_tokens)

    async def generate_content_with_image(
        self,
        prompt: str,
        image_data: bytes,
        mime_type: str,
        system_prompt: str | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    ) -> GenerationResult:
        """Answer a prompt about one image; bad images are refused before any call."""
        image = Image(image_data, mime_type.lower())
        self._check_image(image)
        return await self._generate(prompt, system_prompt, image, max_output_tokens)

    async def validate_credentials(self) -> CredentialCheck:
        """The cheapest real call proving the key works for this model (fetch the model)."""
        ok = f"Key accepted; model {self.model_name} is available."
        return await self._timed_check(self._check_model, ok)

    async def validate_key(self) -> CredentialCheck:
        """Prove the key alone (list the models), when no model is chosen yet."""
        return await self._timed_check(self._check_key, "Key accepted.")

    async def aclose(self) -> None:
        """Close the SDK client's connections (and the adapter's own connection pool)."""
        await self._close_client()
        if self._http_client is not None:
            await self._http_client.aclose()

    async def _close_client(self) -> None:
        close = getattr(self.client, "close", None) or getattr(self.client, "aclose", None)
        if close is not None:
            await close()

    # --- shared machinery ---

    async def _generate(
        self, prompt: str, system_prompt: str | None, image: Image | None, max_output_tokens: int
    ) -> GenerationResult:
        if max_output_tokens < 1:
            raise BadRequest(self.provider_type.value, "max_output_tokens must be at least 1")
        started = time.perf_counter()
        reply = await self._call(
            lambda: self._reply(prompt, system_prompt, image, max_output_tokens)
        )
        return GenerationResult(
            text=reply.text,
            provider_type=self.provider_type.value,
            model_name=reply.model_name or self.model_name,
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            total_tokens=reply.usage.total_tokens,
            latency_ms=_ms_since(started),
        )

    async def _timed_check(
        self, check: Callable[[], Awaitable[None]], ok_message: str
    ) -> CredentialCheck:
        started = time.perf_counter()
        try:
            await self._call(check)
        except ProviderError as exc:
            return CredentialCheck(False, _explain(exc), _ms_since(started))
        return CredentialCheck(True, ok_message, _ms_since(started))

    async def _call(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call; whatever it raises comes out as a redacted ProviderError that
        carries no SDK exception (those hold the request, and so the key).

        The error is raised after the `except` blocks have ended, so Python links no
        __context__ to it, and any chain it had is cut.
        """
        try:
            return await action()
        except ProviderError as exc:  # raised by an adapter's own extraction
            error = exc
        except Exception as exc:  # the one place SDK exceptions are translated
            error = self._translate(exc)
        raise self._detached(error)

    def _translate(self, exc: Exception) -> ProviderError:
        provider = self.provider_type.value
        refusal = refusal_in(exc)
        if refusal is not None:
            return EndpointRefused(provider, f"the address was refused by policy: {refusal}")
        try:
            return self._map_error(exc)
        except Exception:  # a mapping bug must not let the SDK exception out
            return UnexpectedResponse(provider, f"unexpected failure ({type(exc).__name__})")

    def _detached(self, error: ProviderError) -> ProviderError:
        error.with_message(redact(error.message, [self._secret]))
        error.__cause__ = error.__context__ = error.__traceback__ = None
        error.__suppress_context__ = True
        return error

    def _check_image(self, image: Image) -> None:
        provider = self.provider_type.value
        if not self.supports_images:
            raise BadRequest(provider, f"{self.model_name} does not accept images")
        if image.mime_type not in self.image_mime_types:
            allowed = ", ".join(sorted(self.image_mime_types))
            raise BadRequest(provider, f"image type {image.mime_type!r} is not one of {allowed}")
        if not image.data:
            raise BadRequest(provider, "the image is empty")
        if len(image.data) > self.max_image_bytes:
            raise BadRequest(
                provider,
                f"the image is {len(image.data) / 1_048_576:.1f} MiB; "
                f"{provider} accepts at most {self.max_image_bytes / 1_048_576:.0f} MiB",
            )

    @abstractmethod
    async def _reply(
        self, prompt: str, system_prompt: str | None, image: Image | None, max_output_tokens: int
    ) -> Reply:
        """Make the SDK call and extract text, model and usage."""

    @abstractmethod
    async def _check_model(self) -> None:
        """Fetch the configured model (proves the key and the model name)."""

    @abstractmethod
    async def _check_key(self) -> None:
        """List the models (proves the key alone)."""

    @abstractmethod
    def _map_error(self, exc: Exception) -> ProviderError:
        """Translate an SDK (or extraction) exception into a ProviderError."""


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _explain(exc: ProviderError) -> str:
    """A credential-test message that says what to do next."""
    hints = {
        AuthenticationFailed: "The key was refused: check it was copied whole and is active.",
        ModelNotFound: "The key works but the model was not found: check the model name.",
        RateLimited: "The key works but is rate limited right now: test again later.",
        ProviderTimeout: "No answer in time: check the base URL and network, then retry.",
        ProviderUnavailable: "The provider could not be reached or failed: retry later.",
    }
    hint = next((text for kind, text in hints.items() if isinstance(exc, kind)), "")
    return f"{hint} ({exc})" if hint else str(exc)
