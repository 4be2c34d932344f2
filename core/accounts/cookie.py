"""The sign-in cookie's signing key (AI_CONSOLE_COOKIE_KEY, or derived in development)."""

from __future__ import annotations

import hmac

from core.config import ConfigError, Settings
from core.crypto import load_cipher


def cookie_key(settings: Settings) -> str:
    """The key that signs the sign-in cookie: AI_CONSOLE_COOKIE_KEY, required in production.

    In development it is derived from the Fernet key (data/fernet.key unless
    AI_CONSOLE_FERNET_KEYS is set), so it is secret and stable without another key file.
    """
    if settings.cookie_key:
        return settings.cookie_key
    if settings.is_production:
        raise ConfigError(
            "AI_CONSOLE_COOKIE_KEY is required when AI_CONSOLE_ENV=production; create one with "
            "`python -m core keys generate` and keep it in your secret store"
        )
    load_cipher(settings)  # creates data/fernet.key on a first run
    material = settings.fernet_keys[0] if settings.fernet_keys else _read(settings)
    return hmac.new(material.encode(), b"ai-console sign-in cookie v1", "sha256").hexdigest()


def _read(settings: Settings) -> str:
    return settings.fernet_key_file.read_text().strip()
