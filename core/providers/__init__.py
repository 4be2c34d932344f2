"""Provider adapters: one async interface over the Gemini, OpenAI and Anthropic SDKs."""

from core.providers.base import AIProvider, CredentialCheck, GenerationResult
from core.providers.errors import (
    AuthenticationFailed,
    BadRequest,
    EndpointRefused,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    Redirected,
    UnexpectedResponse,
)
from core.providers.factory import ADAPTERS, ProviderFactory, adapter_class, provider_type_of
from core.providers.redaction import redact

__all__ = [
    "ADAPTERS",
    "AIProvider",
    "AuthenticationFailed",
    "BadRequest",
    "CredentialCheck",
    "EndpointRefused",
    "GenerationResult",
    "ModelNotFound",
    "ProviderError",
    "ProviderFactory",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "Redirected",
    "UnexpectedResponse",
    "adapter_class",
    "provider_type_of",
    "redact",
]
