"""What every provider adapter shares: the result type, the errors, redaction, the base class.

An adapter is handed a ready SDK client (built by core.providers.factory from the decrypted key and
an optional base_url) and only turns our request into that SDK's call and its response into a
`GenerationResult`. SDK exceptions are mapped in one place per adapter (`_map_error`) into the few
provider-neutral errors below; callers never see an SDK's own exception type, and no message we
raise contains an API key or bearer token.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from core.models import ProviderType

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_OUTPUT_TOKENS = 1024


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
        self.message = message
        where = f"{provider} answered {status}" if status else provider
        super().__init__(f"{where}: {message}")


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


class BadRequest(ProviderError):
    """The request itself is wrong (too long, unsupported image, bad parameter): not retried,
    not sent elsewhere."""

    fallback = False
    kind = "bad_request"


def error_for_status(
    provider: str, status: int, message: str, retry_after: float | None = None
) -> ProviderError:
    """The provider-neutral error for an HTTP status (messages already redacted)."""
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


# --- redaction -------------------------------------------------------------------------------

_SECRET_PATTERNS = re.compile(
    r"(?i)(bearer\s+)[^\s,;\"']+"  # Authorization headers
    r"|(?<![\w-])sk-[\w-]{6,}"  # OpenAI and Anthropic keys (sk-..., sk-ant-...)
    r"|AIza[\w-]{10,}"  # Google API keys
    r"|((?:api[_-]?key|key|x-goog-api-key|x-api-key)[\"']?\s*[=:]\s*[\"']?)[^\s&,;\"']+"
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets and anything shaped like an API key or bearer token masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERNS.sub(_mask, text)


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
        http_client: Any = None,
    ) -> Any:
        """The SDK client for a key (and base_url); `http_client` shares a connection pool."""

    def __init__(self, client: Any, model_name: str, secret: str) -> None:
        self.client = client
        self.model_name = model_name
        self._secret = secret

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
        """Close the SDK client's connections."""
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
        async with self._errors():
            reply = await self._reply(prompt, system_prompt, image, max_output_tokens)
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
            async with self._errors():
                await check()
        except ProviderError as exc:
            return CredentialCheck(False, _explain(exc), _ms_since(started))
        return CredentialCheck(True, ok_message, _ms_since(started))

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Turn anything the SDK raises into a redacted ProviderError with no SDK chain."""
        try:
            yield
        except ProviderError:
            raise
        except Exception as exc:  # the one place SDK exceptions are translated
            error = self._map_error(exc)
            error.args = (redact(str(error.args[0]), [self._secret]),)
            error.message = redact(error.message, [self._secret])
            raise error from None

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
