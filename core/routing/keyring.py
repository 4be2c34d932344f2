"""The API keys of the configs a router serves, decrypted once per stored ciphertext.

Key rotation without an outage (README, "Rotating the Fernet key"): `python -m core keys rotate`
re-encrypts every stored key with the newest Fernet key. A router started before the new key
was deployed to it cannot decrypt the re-encrypted ciphertext. It then keeps the key it
already decrypted for that config (the provider key itself did not change) and warns once; a
config whose key it never had is skipped like an inactive one (one warning, no usage row per
call), and `explain()` names the config and what to do.
"""

from __future__ import annotations

import logging
import threading
from enum import Enum

from core.crypto import DecryptionError, SecretBox
from core.routing.candidates import Candidate

log = logging.getLogger(__name__)


class KeyState(Enum):
    OK = "ok"
    STALE = "stale"  # the stored ciphertext does not decrypt here; the key read before serves
    MISSING = "missing"  # it does not decrypt and this process never had it: skipped


def restart_hint(config_id: int | None) -> str:
    return (
        f"this process lacks the key that encrypts config {config_id}: restart it with "
        "AI_CONSOLE_FERNET_KEYS=new,old"
    )


class Keyring:
    """Plaintext keys by config, for the ciphertext they were decrypted from. Thread-safe."""

    def __init__(self, cipher: SecretBox) -> None:
        self._cipher = cipher
        self._lock = threading.Lock()
        self._known: dict[int, tuple[str, str]] = {}  # config id -> (ciphertext, plaintext)
        self._undecryptable: set[str] = set()  # ciphertexts tried (warned about once)

    def key_for(self, candidate: Candidate) -> str | None:
        """The key to call `candidate` with; None when this process cannot have it."""
        if candidate.legacy:
            return candidate.secret
        state, key = self._lookup(candidate)
        return key if state is not KeyState.MISSING else None

    def state(self, candidate: Candidate) -> KeyState:
        return KeyState.OK if candidate.legacy else self._lookup(candidate)[0]

    def _lookup(self, candidate: Candidate) -> tuple[KeyState, str | None]:
        config_id, secret = candidate.config_id, candidate.secret
        assert config_id is not None
        with self._lock:
            known = self._known.get(config_id)
            if known is not None and known[0] == secret:
                return KeyState.OK, known[1]
            if secret not in self._undecryptable:
                try:
                    plaintext = self._cipher.decrypt(secret)
                except DecryptionError:
                    self._undecryptable.add(secret)
                    self._warn(candidate, known is not None)
                else:
                    self._known[config_id] = (secret, plaintext)
                    return KeyState.OK, plaintext
            if known is not None:
                return KeyState.STALE, known[1]
            return KeyState.MISSING, None

    @staticmethod
    def _warn(candidate: Candidate, has_old: bool) -> None:
        then = (
            "it keeps serving it with the key it decrypted before"
            if has_old
            else "it is skipped until then"
        )
        log.warning(
            "routing: %s (%s %s); %s",
            restart_hint(candidate.config_id),
            candidate.provider_type,
            candidate.model_name,
            then,
        )
