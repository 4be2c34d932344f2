"""Test doubles for the AI providers: a local fake HTTP server, a recording "attacker" server
and a network guard."""

from .attacker_server import AttackerServer, RawRequest
from .network_guard import NetworkAccessBlocked, NetworkGuard, block_network
from .provider_server import (
    DEFAULT_API_KEYS,
    DEFAULT_MODELS,
    FAULT_MODES,
    IMAGE_TOKENS,
    PROVIDERS,
    REDACTED,
    FakeProviderServer,
    RecordedRequest,
    count_tokens,
    make_reply,
)
from .structured import NOT_JSON, WRONG, structured_answer

__all__ = [
    "DEFAULT_API_KEYS",
    "DEFAULT_MODELS",
    "FAULT_MODES",
    "IMAGE_TOKENS",
    "NOT_JSON",
    "PROVIDERS",
    "REDACTED",
    "WRONG",
    "AttackerServer",
    "FakeProviderServer",
    "NetworkAccessBlocked",
    "NetworkGuard",
    "RawRequest",
    "RecordedRequest",
    "block_network",
    "count_tokens",
    "make_reply",
    "structured_answer",
]
