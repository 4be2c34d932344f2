"""Provider adapters: one async interface over the Gemini, OpenAI and Anthropic SDKs."""

from core.providers.base import (
    AIProvider,
    AuthenticationFailed,
    BadRequest,
    CredentialCheck,
    EndpointRefused,
    GenerationResult,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    Redirected,
    UnexpectedResponse,
    redact,
)
from core.providers.factory import ADAPTERS, ProviderFactory, provider_type_of

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
    "provider_type_of",
    "redact",
]
