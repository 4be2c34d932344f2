"""Secrets are encrypted with MultiFernet; the embedded key is private; production needs a key."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from core.config import ConfigError, Settings
from core.crypto import DecryptionError, SecretBox, generate_key, load_cipher

SECRET = "sk-proj-PLANTED-secret-0123456789"


def settings_for(tmp_path: Path, **kwargs: object) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", data_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_round_trip_and_ciphertext_hides_the_plaintext() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt(SECRET)
    assert SECRET not in token
    assert "PLANTED" not in token
    assert box.decrypt(token) == SECRET
    assert box.encrypt(SECRET) != token  # fresh IV each time: equal keys do not look equal


def test_newest_key_encrypts_and_older_keys_still_decrypt() -> None:
    old, new = generate_key(), generate_key()
    old_token = SecretBox([old]).encrypt(SECRET)
    both = SecretBox([new, old])
    assert both.decrypt(old_token) == SECRET
    assert SecretBox([new]).decrypt(both.encrypt(SECRET)) == SECRET
    with pytest.raises(DecryptionError):
        SecretBox([old]).decrypt(both.encrypt(SECRET))


def test_decryption_error_never_carries_the_secret_or_key() -> None:
    key = generate_key()
    token = SecretBox([generate_key()]).encrypt(SECRET)
    with pytest.raises(DecryptionError) as caught:
        SecretBox([key]).decrypt(token)
    text = str(caught.value) + repr(caught.value)
    assert SECRET not in text and key not in text and token not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_malformed_key_is_a_config_error_that_does_not_echo_it() -> None:
    with pytest.raises(ConfigError, match="entry 2 is not a valid Fernet key") as caught:
        SecretBox([generate_key(), "my-precious-not-a-key"])
    assert "my-precious" not in str(caught.value)


def test_explicit_keys_win_and_no_file_is_written(tmp_path: Path) -> None:
    key = generate_key()
    box = load_cipher(settings_for(tmp_path, fernet_keys=(key,)))
    assert SecretBox([key]).decrypt(box.encrypt(SECRET)) == SECRET
    assert not (tmp_path / "fernet.key").exists()


def test_embedded_key_file_is_created_private_announced_once_and_reused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    said: list[str] = []
    first = load_cipher(settings, announce=said.append)
    key_file = settings.fernet_key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(said) == 1 and str(key_file) in said[0]
    second = load_cipher(settings, announce=said.append)
    assert len(said) == 1
    assert second.decrypt(first.encrypt(SECRET)) == SECRET


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    boxes: list[SecretBox] = []
    threads = [
        threading.Thread(target=lambda: boxes.append(load_cipher(settings, announce=print)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tokens = [box.encrypt(SECRET) for box in boxes]
    assert len(boxes) == 8
    assert all(box.decrypt(token) == SECRET for box in boxes for token in tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["fernet.key"]  # no temporary files left


def test_production_without_a_key_refuses_and_generates_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, env="production")
    with pytest.raises(ConfigError, match="AI_CONSOLE_FERNET_KEYS is required"):
        load_cipher(settings)
    assert not settings.fernet_key_file.exists()
