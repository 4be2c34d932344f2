"""Google Gemini through the google-genai SDK's async client (`Client(...).aio`)."""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from google import genai
from google.genai import errors, types

from core.models import ProviderType
from core.providers.base import AIProvider, Ask, Content, Reply, Usage
from core.providers.errors import (
    AuthenticationFailed,
    BadRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    UnexpectedResponse,
    response_body,
    status_error,
)
from core.providers.streaming import StreamState

# Google answers a bad key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not 401.
_BAD_KEY_MARKERS = ("API_KEY_INVALID", "API key not valid", "API_KEY_")
_RETRY_STATUSES = [408, 429, 500, 502, 503, 504]
_ROLES = {"user": "user", "assistant": "model"}  # Gemini calls the assistant "model"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class GeminiProvider(AIProvider):
    provider_type = ProviderType.GEMINI
    image_mime_types = AIProvider.image_mime_types | {"image/heic", "image/heif"}
    known_models = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro")

    @staticmethod
    def build_client(
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        max_retries: int,
        http_client: httpx2.AsyncClient,
    ) -> genai.Client:
        # Unlike the other two SDKs, google-genai neither retries nor times out by default.
        # Every aio call goes through `http_client` (the SDK builds no async client of its own
        # when given one, and aiohttp is not installed); the SDK still builds a sync client,
        # which we never call: it gets a ready TLS context (loading the CA store costs ~35 ms)
        # and no redirects or proxies either.
        options = types.HttpOptions(
            base_url=base_url,
            timeout=int(timeout_s * 1000),
            retry_options=types.HttpRetryOptions(
                attempts=max_retries + 1, http_status_codes=_RETRY_STATUSES
            ),
            httpx_async_client=http_client,
            client_args={"verify": _tls_context(), "follow_redirects": False, "trust_env": False},
        )
        return genai.Client(api_key=api_key, http_options=options)

    async def _reply(self, ask: Ask) -> Reply:
        response = await self.client.aio.models.generate_content(**self._request(ask))
        usage = _usage(response.usage_metadata)
        if usage is None:
            raise UnexpectedResponse("gemini", "the answer carried no usage metadata")
        return Reply(
            text=response.text or "",
            model_name=response.model_version or self.model_name,
            usage=usage,
        )

    async def _stream(self, ask: Ask, state: StreamState) -> AsyncIterator[str]:
        request = self._request(ask)
        stream = await self.client.aio.models.generate_content_stream(**request)
        try:
            async for chunk in stream:
                state.model_name = chunk.model_version or state.model_name
                meta = chunk.usage_metadata
                if meta is not None and meta.prompt_token_count is not None:
                    state.input_tokens = meta.prompt_token_count
                    # Every chunk carries the usage so far; the last one's is the whole answer's.
                    state.usage = _usage(meta)
                if chunk.text:
                    yield chunk.text
        finally:
            await stream.aclose()  # leaving early closes the response

    def _request(self, ask: Ask) -> dict[str, Any]:
        contents = [
            types.Content(role=_ROLES[role], parts=_parts(content)) for role, content in ask.turns()
        ]
        json_output: dict[str, Any] = {}
        if ask.schema is not None:
            json_output = {
                "response_mime_type": "application/json",
                "response_json_schema": ask.schema.json,
            }
        config = types.GenerateContentConfig(
            system_instruction=ask.system_prompt,
            max_output_tokens=ask.max_output_tokens,
            **json_output,
        )
        return {"model": self.model_name, "contents": contents, "config": config}

    async def _check_model(self) -> None:
        await self.client.aio.models.get(model=self.model_name)

    async def _check_key(self) -> None:
        await self.client.aio.models.list(config={"page_size": 1})

    async def _close_client(self) -> None:
        await self.client.aio.aclose()  # leaves http_client open: AIProvider.aclose closes it

    def _map_error(self, exc: Exception) -> ProviderError:
        if isinstance(exc, errors.APIError):
            # google-genai puts a non-JSON body in exc.message: keep only what the raw body's
            # JSON says (base.provider_message). A 3xx arrives here as a plain APIError.
            response = exc.response
            headers = getattr(response, "headers", None) or {}
            body = response_body(response)
            error = status_error("gemini", int(exc.code or 0), headers, body, [self._secret])
            if (
                isinstance(error, BadRequest)
                and exc.code == 400
                and any(m in str(exc.details) for m in _BAD_KEY_MARKERS)
            ):
                return AuthenticationFailed("gemini", error.message, exc.code)
            return error
        if isinstance(exc, httpx2.TimeoutException):
            return ProviderTimeout("gemini", "no answer before the timeout")
        if isinstance(exc, httpx2.TransportError):
            return ProviderUnavailable("gemini", "could not connect to the API")
        if isinstance(exc, ValueError):  # json.JSONDecodeError, pydantic's ValidationError
            return UnexpectedResponse("gemini", "the answer was not JSON of the expected shape")
        if isinstance(exc, UnexpectedResponse):
            return exc
        return UnexpectedResponse("gemini", f"unexpected failure ({type(exc).__name__})")


def _parts(content: Content) -> list[types.Part]:
    """A turn's content as text and inline-data parts, in their order."""
    if isinstance(content, str):
        return [types.Part.from_text(text=content)]
    return [
        types.Part.from_text(text=part)
        if isinstance(part, str)
        else types.Part.from_bytes(data=part.data, mime_type=part.mime_type)
        for part in content
    ]


def _usage(meta: types.GenerateContentResponseUsageMetadata | None) -> Usage | None:
    """Gemini's usage; thinking tokens are billed as output. None if it reported none."""
    if meta is None or meta.prompt_token_count is None:
        return None
    thoughts = meta.thoughts_token_count or 0
    output = (meta.candidates_token_count or 0) + thoughts
    total = meta.total_token_count or meta.prompt_token_count + output
    return Usage(
        meta.prompt_token_count,
        output,
        total,
        cached_input_tokens=meta.cached_content_token_count or 0,
        reasoning_tokens=thoughts,
    )
