"""What every provider adapter shares: the result types and the base class.

An adapter is handed a ready SDK client (built by core.providers.factory from the decrypted key and
an optional base_url) and only turns our request into that SDK's call and its response into a
`GenerationResult`. SDK exceptions are mapped in one place per adapter (`_map_error`) into the few
provider-neutral errors of core/providers/errors.py; callers never see an SDK's own exception
type, and no message we raise contains an API key or bearer token (core/providers/redaction.py).
"""

from __future__ import annotations

import base64
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from core.models import ProviderType
from core.providers.egress import refusal_in
from core.providers.errors import (
    AuthenticationFailed,
    BadRequest,
    EndpointRefused,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnexpectedResponse,
)
from core.providers.redaction import redact
from core.providers.streaming import ProviderStream, StreamState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from core.pricing import Priced
    from core.providers.structured import Schema

DEFAULT_TIMEOUT_S = 60.0


DEFAULT_MAX_RETRIES = 2


DEFAULT_MAX_OUTPUT_TOKENS = 1024


T = TypeVar("T")


@dataclass(frozen=True)
class GenerationResult:
    """One answer, with the token usage the provider itself reported.

    Adapters fill text, provider, model and usage; core.routing adds config_id, what the cost
    is worked out from, the failed attempts that came before this answer, and for a call with
    a response_schema the answer `parsed` (core/providers/structured.py; None without one).
    """

    text: str
    provider_type: str
    model_name: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    latency_ms: int
    config_id: int | None = None
    attempts: tuple[Any, ...] = field(default=())
    priced: Priced | None = field(default=None, repr=False, compare=False)
    # Of input_tokens: read from / written to the provider's prompt cache; of output_tokens:
    # thinking (0 where the provider does not say).
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    parsed: Any = None
    # Set when the router lowered max_output_tokens to this to fit a limit (fit_to_budget).
    fitted_max_output_tokens: int | None = None

    @property
    def cost_usd(self) -> Decimal | None:
        """USD at genai-prices' price when the call started (None: unpriced), worked out on
        first read, the same figure as on the call's usage row (core/pricing.py)."""
        return self.priced.usd if self.priced is not None else None

    @property
    def cache_savings_usd(self) -> Decimal | None:
        """What the provider's prompt cache saved on this call (None: no cache used, or
        unpriced); negative when writing the cache cost more than reading it saved."""
        return self.priced.savings_usd if self.priced is not None else None

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
    """Tokens as the provider reported them. input_tokens counts all input, cached or not;
    cached_input_tokens of it were read from the provider's prompt cache, cache_write_tokens
    written to it; reasoning_tokens of output_tokens were thinking."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


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

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


Part = str | Image  # a piece of a turn: a text, or an image
Content = str | tuple[Part, ...]  # a turn: its text, or its parts in order (texts and images)
Turn = tuple[str, Content]  # (role "user" | "assistant", content)


def images_in(content: Content) -> list[Image]:
    return [] if isinstance(content, str) else [p for p in content if isinstance(p, Image)]


@dataclass(frozen=True)
class Ask:
    """One request, in provider-neutral terms (each adapter builds its SDK's call from it)."""

    prompt: Content  # the last user turn, which the answer answers
    system_prompt: str | None = None
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    history: tuple[Turn, ...] = ()  # (role "user" | "assistant", content) before
    schema: Schema | None = None  # answer with JSON of this schema (the text returned as is)

    def turns(self) -> list[Turn]:
        """Every turn in order: the history, then the user's prompt."""
        return [*self.history, ("user", self.prompt)]

    def images(self) -> list[Image]:
        """Every image of the request, in the order of its turns."""
        return [image for _, content in self.turns() for image in images_in(content)]


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
    # Where generate_content_with_image puts its one image (Anthropic advises before the text).
    image_before_text: ClassVar[bool] = False
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
        prompt: Content,
        system_prompt: str | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        history: tuple[Turn, ...] = (),
        schema: Schema | None = None,
    ) -> GenerationResult:
        """Answer the last user turn `prompt` (a text, or its texts and images in order), after
        the conversation so far (`history`: (role, content) turns, role "user" or
        "assistant"); with `schema`, as JSON of it through the provider's own structured
        output (the text as it came: core/providers/structured.py checks it). Images the
        provider does not accept are refused before any call."""
        return await self._generate(Ask(prompt, system_prompt, max_output_tokens, history, schema))

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
        parts = (image, prompt) if self.image_before_text else (prompt, image)
        return await self.generate_content(parts, system_prompt, max_output_tokens)

    def stream_content(
        self,
        prompt: Content,
        system_prompt: str | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        history: tuple[Turn, ...] = (),
    ) -> ProviderStream:
        """Stream the answer (to the same turns as generate_content) through the SDK's
        streaming API: core/providers/streaming.py. Nothing is sent until the first piece is
        asked for; bad input is refused here, before any call."""
        ask = self._checked(Ask(prompt, system_prompt, max_output_tokens, history))
        state = StreamState(self.model_name)
        return ProviderStream(self, self._stream(ask, state), state)

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

    def _checked(self, ask: Ask) -> Ask:
        """The request, once it is one this provider can take (BadRequest otherwise)."""
        if ask.max_output_tokens < 1:
            raise BadRequest(self.provider_type.value, "max_output_tokens must be at least 1")
        for image in ask.images():
            self._check_image(image)
        return ask

    async def _generate(self, ask: Ask) -> GenerationResult:
        self._checked(ask)
        started = time.perf_counter()
        reply = await self._call(lambda: self._reply(ask))
        return GenerationResult(
            text=reply.text,
            provider_type=self.provider_type.value,
            model_name=reply.model_name or self.model_name,
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            total_tokens=reply.usage.total_tokens,
            latency_ms=_ms_since(started),
            cached_input_tokens=reply.usage.cached_input_tokens,
            cache_write_tokens=reply.usage.cache_write_tokens,
            reasoning_tokens=reply.usage.reasoning_tokens,
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
    async def _reply(self, ask: Ask) -> Reply:
        """Make the SDK call and extract text, model and usage."""

    @abstractmethod
    def _stream(self, ask: Ask, state: StreamState) -> AsyncIterator[str]:
        """An async generator over the SDK's stream: yields the text pieces and fills `state`
        (model, usage) from the events; closing it closes the SDK's stream."""

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
