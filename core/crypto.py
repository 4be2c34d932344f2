"""Secrets at rest: MultiFernet over AI_CONSOLE_FERNET_KEYS (newest key first).

`load_cipher(settings)` is the one way to get a `SecretBox`. In development with no keys set it
uses data/fernet.key, generating it (mode 0600) on first use and saying where; in production a
missing key is a `ConfigError`, never a silently generated key.

Rotation: put a new key first in AI_CONSOLE_FERNET_KEYS, keep the old one after it, run
`python -m core keys rotate` (re-encrypts every stored secret with the newest key in one
transaction), then drop the old key.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import ConfigError, Settings
from core.db import private_dir
from core.models import AlertRule, ProviderConfig, User


class DecryptionError(Exception):
    """A stored secret cannot be decrypted with the configured keys (never carries the secret)."""


class SecretBox:
    """Encrypt and decrypt short secrets (API keys, TOTP secrets) with a list of Fernet keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("no Fernet key given")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                # Never echo the key itself: it is a secret even when malformed.
                raise ConfigError(
                    f"AI_CONSOLE_FERNET_KEYS entry {position} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes; "
                    "make one with `python -m core keys generate`)"
                ) from None
        self._cipher = MultiFernet(fernets)
        self.key_count = len(fernets)

    def encrypt(self, plaintext: str) -> str:
        """Encrypt with the newest key; the result is ASCII text safe to store."""
        return self._cipher.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """Decrypt with whichever configured key made `token`."""
        try:
            return self._cipher.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise DecryptionError(
                "stored secret cannot be decrypted with AI_CONSOLE_FERNET_KEYS "
                "(was its key dropped before `python -m core keys rotate` ran?)"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt `token` with the newest key."""
        try:
            return self._cipher.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise DecryptionError(
                "stored secret cannot be decrypted with any key in AI_CONSOLE_FERNET_KEYS"
            ) from None

    def __repr__(self) -> str:
        return f"SecretBox(keys={self.key_count})"


def generate_key() -> str:
    """A new random Fernet key, as text."""
    return Fernet.generate_key().decode("ascii")


def load_cipher(settings: Settings, announce: Callable[[str], None] | None = None) -> SecretBox:
    """The SecretBox for `settings`; may create the embedded key file (development only)."""
    if settings.fernet_keys:
        return SecretBox(settings.fernet_keys)
    if settings.is_production:
        raise ConfigError(
            "AI_CONSOLE_FERNET_KEYS is required when AI_CONSOLE_ENV=production; "
            "create a key with `python -m core keys generate` and keep it in your secret store"
        )
    return SecretBox([_embedded_key(settings, announce or _to_stderr)])


def _embedded_key(settings: Settings, announce: Callable[[str], None]) -> str:
    path = settings.fernet_key_file
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        pass
    else:
        if not key:
            raise ConfigError(f"{path} is empty: restore it from your backup")
        return key
    private_dir(path.parent, tighten=path.parent == settings.data_dir)
    key = generate_key()
    # Write a private temporary file, then link it into place: the link either creates the key
    # file whole or fails because another process got there first, whose key we then use.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".fernet-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return path.read_text().strip()
    finally:
        Path(tmp_name).unlink()
    announce(
        f"Generated the encryption key for stored secrets at {path} (mode 0600). Back it up: "
        "without it, stored API keys cannot be decrypted. In production set "
        "AI_CONSOLE_FERNET_KEYS instead."
    )
    return key


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class RotationReport:
    provider_keys: int
    totp_secrets: int
    alert_targets: int = 0


def rotate_all_secrets(session: Session, box: SecretBox) -> RotationReport:
    """Re-encrypt every stored secret with the newest key, inside the caller's transaction.

    Any secret that no configured key can decrypt raises DecryptionError naming the row; the
    caller's transaction then rolls back, so either every row is rotated or none is. Rotation is
    not an edit: it leaves `version` and `updated_at` alone, so open edit forms stay valid.
    """
    session.flush()
    counts = [_rotate_column(session, box, *target) for target in _SECRET_COLUMNS]
    session.expire_all()
    return RotationReport(*counts)


_SECRET_COLUMNS = (
    (ProviderConfig, "api_key_encrypted", "the API key of provider config"),
    (User, "totp_secret_encrypted", "the TOTP secret of user"),
    (AlertRule, "target_encrypted", "the target of alert rule"),
)


def _rotate_column(session: Session, box: SecretBox, model: type, column: str, what: str) -> int:
    table = model.__table__
    rows = session.execute(
        select(table.c.id, table.c[column], table.c.updated_at)
        .where(table.c[column].is_not(None))
        .order_by(table.c.id)
    ).all()
    for row_id, token, updated_at in rows:
        try:
            new_token = box.rotate(token)
        except DecryptionError:
            raise DecryptionError(
                f"{what} {row_id} cannot be decrypted with any key in AI_CONSOLE_FERNET_KEYS; "
                "nothing was rotated"
            ) from None
        session.execute(
            table.update()
            .where(table.c.id == row_id)
            .values({column: new_token, "updated_at": updated_at})
        )
    return len(rows)
