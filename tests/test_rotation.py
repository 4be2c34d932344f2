"""`python -m core keys rotate` re-encrypts every stored secret with the newest key, or none."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select, text

from core.cli import main
from core.crypto import DecryptionError, SecretBox, generate_key
from core.models import AdminActionLog, ProviderConfig, User
from tests.support.database import MigratedDatabase

API_KEYS = ["sk-PLANTED-openai-1111", "sk-ant-PLANTED-2222", "AIzaPLANTED3333"]
TOTP = "JBSWY3DPEHPK3PXP"


def store_secrets(db: MigratedDatabase, boxes: list[SecretBox]) -> None:
    """One provider config per box (API_KEYS in order) and one enrolled plus one new user."""
    with db.session() as session:
        for n, box in enumerate(boxes):
            session.add(
                ProviderConfig(
                    provider_type="openai",
                    api_key_encrypted=box.encrypt(API_KEYS[n]),
                    key_last4=API_KEYS[n][-4:],
                    model_name="gpt-4o-mini",
                    display_name=f"c{n}",
                )
            )
        session.add(
            User(
                username="ada",
                password_hash="h",
                role="super_admin",
                totp_secret_encrypted=boxes[0].encrypt(TOTP),
            )
        )
        session.add(User(username="bob", password_hash="h", role="analyst"))
        session.commit()


def stored_tokens(db: MigratedDatabase) -> list[str]:
    with db.engine.connect() as conn:
        keys = conn.scalars(text("SELECT api_key_encrypted FROM ai_provider_configs ORDER BY id"))
        totp = conn.scalars(
            text("SELECT totp_secret_encrypted FROM users WHERE totp_secret_encrypted IS NOT NULL")
        )
        return [*keys, *totp]


def test_the_database_never_holds_a_plaintext_secret(db: MigratedDatabase) -> None:
    store_secrets(db, [SecretBox([generate_key()])] * 3)
    with db.engine.connect() as conn:
        dump = " ".join(
            str(v) for row in conn.execute(text("SELECT * FROM ai_provider_configs")) for v in row
        )
        dump += " ".join(str(v) for row in conn.execute(text("SELECT * FROM users")) for v in row)
    for secret in [*API_KEYS, TOTP]:
        assert secret not in dump
    assert "PLANTED" not in dump


def test_rotation_re_encrypts_every_secret_with_the_newest_key(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = generate_key(), generate_key()
    store_secrets(db, [SecretBox([old])] * 3)
    before = stored_tokens(db)
    with db.session() as session:
        versions = session.execute(select(ProviderConfig.version, ProviderConfig.updated_at)).all()

    settings = dataclasses.replace(db.settings, fernet_keys=(new, old))
    assert main(["keys", "rotate"], settings=settings) == 0
    out = capsys.readouterr().out
    assert "Re-encrypted 3 provider key(s), 1 TOTP secret(s) and 0 alert target(s)" in out
    assert "remove them from AI_CONSOLE_FERNET_KEYS" in out

    after = stored_tokens(db)
    assert len(after) == 4 and not set(before) & set(after)
    # With the old key dropped, everything still decrypts; the old key alone opens nothing.
    assert [SecretBox([new]).decrypt(t) for t in after] == [*API_KEYS, TOTP]
    for token in after:
        with pytest.raises(DecryptionError):
            SecretBox([old]).decrypt(token)
    # A token that was never rotated fails only because its key was dropped.
    with pytest.raises(DecryptionError):
        SecretBox([new]).decrypt(before[0])
    # Rotation is not an edit: open edit forms do not turn stale.
    with db.session() as session:
        assert (
            session.execute(select(ProviderConfig.version, ProviderConfig.updated_at)).all()
            == versions
        )
        log = session.scalars(select(AdminActionLog)).one()
    assert (log.action, log.actor_label[:4], log.actor_id) == ("keys.rotate", "cli:", None)
    assert log.details == {
        "provider_configs": 3,
        "mfa_enrolments": 1,
        "alert_rules": 0,
        "keys_configured": 2,
    }


def test_rotation_is_all_or_nothing(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, lost = generate_key(), generate_key(), generate_key()
    store_secrets(db, [SecretBox([old]), SecretBox([old]), SecretBox([lost])])
    before = stored_tokens(db)

    settings = dataclasses.replace(db.settings, fernet_keys=(new, old))
    assert main(["keys", "rotate"], settings=settings) == 1
    err = capsys.readouterr().err
    assert "provider config 3 cannot be decrypted" in err and "nothing was rotated" in err
    assert err.count("\n") == 1  # one clear line
    assert stored_tokens(db) == before
    with db.session() as session:
        assert session.scalars(select(AdminActionLog)).all() == []


def test_rotation_refuses_an_unmigrated_database(
    empty_database: str, fernet_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.config import Settings

    settings = Settings(database_url=empty_database, fernet_keys=(fernet_key,))
    assert main(["keys", "rotate"], settings=settings) == 1
    assert "run `python -m core migrate` first" in capsys.readouterr().err
