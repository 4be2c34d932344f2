"""The Account page in AppTest: enrolling an authenticator app (QR code and key, saved only once
a code is confirmed) and changing the password."""

from __future__ import annotations

import pyotp
from sqlalchemy import select

import ui
from core import accounts
from core.models import AdminActionLog, utcnow
from tests.support.pages import PASSWORD, Console, state_dump, texts


def test_enrolment_shows_a_key_and_saves_it_only_after_a_good_code(console: Console) -> None:
    user_id, _ = console.add_user("root", mfa=False)
    at = console.page("pages/account.py", user_id, **{ui.MFA_VERIFIED_AT: None}).run()
    assert not at.exception
    assert "Super-admins must set up an authenticator app" in at.warning[0].value
    assert [field.label for field in at.text_input] == ["Code"]  # nothing else for now
    assert at.get("image")  # the QR code
    secret = at.code[0].value.replace(" ", "")
    assert len(secret) == 32
    assert secret not in state_dump(at)  # only its encrypted form waits in the session

    at.text_input[0].input("000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    at.button[0].click().run()
    assert "does not match" in at.error[0].value
    assert console.user(user_id).totp_secret_encrypted is None
    with console.db.session() as session:  # the page committed the refusal's audit row
        trail = session.scalars(select(AdminActionLog.action)).all()
    assert trail == ["auth.mfa_enrolment_failed"]
    assert at.code[0].value.replace(" ", "") == secret  # the same key while enrolling

    at.text_input[0].input(pyotp.TOTP(secret).now())
    at.button[0].click().run()
    assert not at.exception
    assert at.toast[0].value == "Two-step verification is on."
    assert "Two-step verification is on:" in at.success[0].value
    stored = console.user(user_id).totp_secret_encrypted
    assert stored and console.box.decrypt(stored) == secret
    assert at.session_state[ui.MFA_VERIFIED_AT] is not None  # enrolling proves a code too
    assert secret not in texts(at) and not at.code  # never shown again
    assert ui.ENROLMENT not in at.session_state


def test_an_analyst_may_enrol_but_is_not_made_to(console: Console) -> None:
    user_id, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page("pages/account.py", user_id).run()
    assert not at.warning and at.info[0].value.startswith("Optional for analysts")
    assert "Current password" in [field.label for field in at.text_input]
    assert not at.code and ui.ENROLMENT not in at.session_state  # no key until asked for
    next(b for b in at.button if b.label == "Set up an authenticator app").click().run()
    assert len(at.code[0].value.replace(" ", "")) == 32


def test_changing_the_password_needs_the_current_one(console: Console) -> None:
    user_id, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page("pages/account.py", user_id).run()
    current, new, repeat = at.text_input[-3:]
    current.input("wrong password!")
    new.input("a brand new password")
    repeat.input("a brand new password")
    at.button[-1].click().run()
    assert at.error[0].value == "The current password is not right."

    current, new, repeat = at.text_input[-3:]
    current.input(PASSWORD)
    new.input("a brand new password")
    repeat.input("a brand new password")
    at.button[-1].click().run()
    assert not at.exception
    assert at.toast[0].value.startswith("Password changed.")
    assert at.session_state[ui.USER_ID] == user_id  # this session lives on; others ended
    user = console.user(user_id)
    assert accounts.verify_password("a brand new password", user.password_hash)
    assert user.sessions_revoked_at is not None and user.sessions_revoked_at <= utcnow()
    assert "a brand new password" not in state_dump(at) and PASSWORD not in state_dump(at)


def test_a_guessable_new_password_is_refused_with_the_reason(console: Console) -> None:
    user_id, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page("pages/account.py", user_id).run()
    for weak, why in (
        ("ann-console-2026", "contains your username, name or email"),
        ("password1234", "This is a very common password"),
    ):
        current, new, repeat = at.text_input[-3:]
        current.input(PASSWORD)
        new.input(weak)
        repeat.input(weak)
        at.button[-1].click().run()
        assert why in at.error[0].value
    assert accounts.verify_password(PASSWORD, console.user(user_id).password_hash)  # unchanged
