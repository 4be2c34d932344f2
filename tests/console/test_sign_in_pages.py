"""Signing in, in AppTest: app.py's gate and navigation, the setup page, the sign-in page with
its password-then-code steps, throttling (the clock moved with time-machine), replayed codes,
and logout.

AppTest drives one page at a time: app.py's first run (which pages a session gets), or one page
file run on its own. (After a first run, AppTest treats our pages/ folder as Streamlit's old
multipage folder and reruns only the page, so interactions are tested on the page itself.)
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select, update
from streamlit.testing.v1 import AppTest

import ui
from core import accounts
from core.models import AdminActionLog, User, utcnow
from tests.support.pages import PASSWORD, Console, code, error_under, state_dump, texts

# app.py's pages and their titles, in its order.
PAGES = {
    "pages/providers.py": "Providers",
    "pages/alerts.py": "Alerts",
    "pages/users.py": "Users",
    "pages/audit.py": "Audit log",
    "pages/usage.py": "Usage",
    "pages/account.py": "Account",
    "pages/setup.py": "Set up",
    "pages/login.py": "Sign in",
}


def nav_titles(at: AppTest) -> list[str]:
    """The titles of the pages the last run registered with st.navigation (AppTest refuses to
    switch to any other). It leaves the next run() on the last page found: call it last."""
    found = []
    for path, title in PAGES.items():
        try:
            at.switch_page(path)
        except ValueError:
            continue
        found.append(title)
    return found


def signed_in_app(console: Console, user_id: int, **state: object) -> AppTest:
    """app.py's first run for a session signed in as `user_id`."""
    at = console.app()
    at.session_state[ui.USER_ID] = user_id
    at.session_state[ui.SIGNED_IN_AT] = utcnow()
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def sign_in(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    return at.button[0].click().run()


def enter_code(at: AppTest, value: str) -> AppTest:
    at.text_input[0].input(value)
    return at.button[0].click().run()


def actions(console: Console) -> list[str]:
    with console.db.session() as session:
        return list(session.scalars(select(AdminActionLog.action).order_by(AdminActionLog.id)))


# --- app.py: which pages a session gets ------------------------------------------------------


def test_with_no_user_the_console_offers_only_the_setup(console: Console) -> None:
    at = console.app().run()
    assert not at.exception
    assert at.title[0].value == "AI Provider Console"
    assert at.subheader[0].value == "Set up the console"
    assert "python -m core migrate" in at.markdown[0].value
    assert not at.sidebar.page_link  # no page names before sign-in
    assert nav_titles(at) == ["Set up"]


def test_once_a_user_exists_the_console_asks_to_sign_in(console: Console) -> None:
    console.add_user("root")
    at = console.app().run()
    assert at.subheader[0].value == "Sign in" and not at.sidebar.page_link
    assert nav_titles(at) == ["Sign in"]


@pytest.mark.parametrize(
    ("role", "mfa", "present", "absent"),
    [
        ("super_admin", True, ["Alerts", "Users", "Audit log", "Account"], []),
        ("analyst", False, ["Account"], ["Alerts", "Users", "Audit log"]),
        ("analyst", True, ["Account"], ["Alerts", "Users", "Audit log"]),
    ],
)
def test_navigation_is_built_from_the_role(
    console: Console, role: str, mfa: bool, present: list[str], absent: list[str]
) -> None:
    user_id, _ = console.add_user("someone", role=role, mfa=mfa)
    at = signed_in_app(console, user_id, **{ui.MFA_VERIFIED_AT: utcnow()})
    assert not at.exception
    assert at.sidebar.button[0].label == "Log out"
    # The console draws the sidebar's links itself (Streamlit's own listed pages/'s file names
    # before sign-in), from the list st.navigation gets: one link per page the role may open.
    links = [link.value for link in at.sidebar.page_link]
    assert [t for t in links if t in present] == present  # in this order
    assert not set(absent) & set(links)
    assert links == nav_titles(at)


def test_a_super_admin_without_an_authenticator_gets_only_the_account_page(
    console: Console,
) -> None:
    user_id, _ = console.add_user("root", mfa=False)
    at = signed_in_app(console, user_id)
    assert [link.value for link in at.sidebar.page_link] == ["Account"]
    assert nav_titles(at) == ["Account"]
    assert at.title[0].value == "Account"
    assert "Super-admins must set up an authenticator app" in at.warning[0].value


def test_a_disabled_account_is_signed_out_at_its_next_click(console: Console) -> None:
    user_id, _ = console.add_user("ann", role="analyst", mfa=False)
    with console.db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(is_active=False))
        session.commit()
    at = signed_in_app(console, user_id)
    assert nav_titles(at) == ["Sign in"]
    assert ui.USER_ID not in at.session_state
    assert "You were signed out" in at.toast[0].value


# --- the setup page --------------------------------------------------------------------------


def test_a_wrong_setup_token_is_refused_and_the_right_one_signs_in_the_first_admin(
    console: Console,
) -> None:
    with console.db.session() as session, session.begin():
        issued = accounts.issue_setup_token(session)
    assert issued is not None
    at = console.page("pages/setup.py").run()
    values = ("wrong-token", "root", "", PASSWORD, PASSWORD)
    for field, value in zip(at.text_input, values, strict=True):
        field.input(value)
    at.button[0].click().run()
    assert "That is not the setup token" in at.error[0].value
    assert ui.USER_ID not in at.session_state

    values = (issued.token, "Root", "Rooty", PASSWORD, PASSWORD)
    for field, value in zip(at.text_input, values, strict=True):
        field.input(value)
    at.button[0].click().run()
    assert not at.exception
    user_id = at.session_state[ui.USER_ID]
    assert console.user(user_id).username == "root"
    assert issued.token not in state_dump(at) and PASSWORD not in state_dump(at)
    assert actions(console) == [
        "setup.token_issued",
        "setup.failed",
        "setup.completed",
        "auth.login",
    ]

    # Next, app.py offers the new super-admin nothing but enrolment.
    after = signed_in_app(console, user_id)
    assert after.title[0].value == "Account"
    assert "Super-admins must set up an authenticator app" in after.warning[0].value
    assert issued.token not in texts(after)


def test_the_setup_page_refuses_a_guessable_password_and_says_why(console: Console) -> None:
    with console.db.session() as session, session.begin():
        issued = accounts.issue_setup_token(session)
    assert issued is not None
    at = console.page("pages/setup.py").run()
    weak = "alice-console-2026"
    for field, value in zip(at.text_input, (issued.token, "Alice", "", weak, weak), strict=True):
        field.input(value)
    at.button[0].click().run()
    assert "contains your username, name or email" in (error_under(at, "Password") or "")
    assert ui.USER_ID not in at.session_state and console.user_count() == 0

    for field, value in zip(
        at.text_input,
        (issued.token, "bob", "Roberta Quintanilla", "quintanilla77 rocks", "quintanilla77 rocks"),
        strict=True,
    ):
        field.input(value)
    at.button[0].click().run()
    assert "contains your username, name or email" in (error_under(at, "Password") or "")

    for field, value in zip(
        at.text_input, (issued.token, "bob", "", "password1234", "password1234"), strict=True
    ):
        field.input(value)
    at.button[0].click().run()
    assert "This is a very common password" in (error_under(at, "Password") or "")
    assert console.user_count() == 0


SETUP_LABELS = (
    "Setup token",
    "Username for the first super-admin",
    "Display name (optional)",
    "Password",
    "Repeat the password",
)


def setup_fields(at: AppTest) -> dict[str, object]:
    return {field.label: field for field in at.text_input}


def test_the_setup_form_keeps_what_was_typed_and_shows_each_error_beside_its_field(
    console: Console,
) -> None:
    with console.db.session() as session, session.begin():
        issued = accounts.issue_setup_token(session)
    assert issued is not None
    at = console.page("pages/setup.py").run()
    fields = setup_fields(at)
    for label, value in zip(
        SETUP_LABELS, (issued.token, "bad name!", "Ada", PASSWORD, "another one"), strict=True
    ):
        fields[label].input(value)  # type: ignore[attr-defined]
    at.button[0].click().run()
    assert not at.exception
    assert (error_under(at, "Username for the first super-admin") or "").startswith(
        "Usernames are 1–150 characters"
    )
    assert error_under(at, "Repeat the password") == (
        "The two passwords differ. Type the same password twice."
    )
    assert error_under(at, "Password") is None and error_under(at, "Setup token") is None
    # What was typed stays, but the passwords are typed again and the token waits sealed.
    values = {label: field.value for label, field in setup_fields(at).items()}  # type: ignore[attr-defined]
    assert values == {
        "Setup token": "",
        "Username for the first super-admin": "bad name!",
        "Display name (optional)": "Ada",
        "Password": "",
        "Repeat the password": "",
    }
    assert "The token you pasted is kept" in at.caption[0].value
    dump = state_dump(at)
    assert issued.token not in dump and PASSWORD not in dump and "another one" not in dump
    with console.db.session() as session:  # nothing tried: no failed token counted
        assert session.scalars(select(AdminActionLog.action)).all() == ["setup.token_issued"]

    # The username fixed, the passwords typed again, the token not pasted again: the fixed
    # field's error is gone, and the kept token sets the console up.
    fields = setup_fields(at)
    fields["Username for the first super-admin"].input("ada")  # type: ignore[attr-defined]
    fields["Password"].input(PASSWORD)  # type: ignore[attr-defined]
    fields["Repeat the password"].input("still another")  # type: ignore[attr-defined]
    at.button[0].click().run()
    assert error_under(at, "Username for the first super-admin") is None
    assert error_under(at, "Repeat the password") is not None
    fields = setup_fields(at)
    fields["Password"].input(PASSWORD)  # type: ignore[attr-defined]
    fields["Repeat the password"].input(PASSWORD)  # type: ignore[attr-defined]
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert console.user(at.session_state[ui.USER_ID]).display_name == "Ada"
    assert issued.token not in state_dump(at) and PASSWORD not in state_dump(at)


def test_a_wrong_setup_token_is_said_under_the_token_and_replaced_by_the_next_paste(
    console: Console,
) -> None:
    with console.db.session() as session, session.begin():
        issued = accounts.issue_setup_token(session)
    assert issued is not None
    at = console.page("pages/setup.py").run()
    for label, value in zip(SETUP_LABELS, ("wrong", "ada", "", PASSWORD, PASSWORD), strict=True):
        setup_fields(at)[label].input(value)  # type: ignore[attr-defined]
    at.button[0].click().run()
    assert (error_under(at, "Setup token") or "").startswith("That is not the setup token")
    assert setup_fields(at)["Username for the first super-admin"].value == "ada"  # type: ignore[attr-defined]
    fields = setup_fields(at)
    fields["Setup token"].input(issued.token)  # type: ignore[attr-defined]
    fields["Password"].input(PASSWORD)  # type: ignore[attr-defined]
    fields["Repeat the password"].input(PASSWORD)  # type: ignore[attr-defined]
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert console.user(at.session_state[ui.USER_ID]).username == "ada"


# --- the sign-in page ------------------------------------------------------------------------


def test_the_code_is_required_after_the_password_and_a_used_code_is_refused(
    console: Console,
) -> None:
    user_id, secret = console.add_user("root")
    at = console.page("pages/login.py").run()
    sign_in(at, "root", PASSWORD)
    assert at.subheader[0].value == "Two-step verification"
    assert ui.USER_ID not in at.session_state  # the password alone signs nobody in

    used = code(secret)
    enter_code(at, used)
    assert not at.exception
    assert at.session_state[ui.USER_ID] == user_id
    assert at.session_state[ui.MFA_VERIFIED_AT] is not None

    # Another browser replays the same code: refused.
    other = console.page("pages/login.py").run()
    sign_in(other, "root", PASSWORD)
    enter_code(other, used)
    assert other.error[0].value == accounts.REPLAYED_CODE
    assert ui.USER_ID not in other.session_state
    assert PASSWORD not in state_dump(at) and used not in state_dump(at)
    assert actions(console) == ["auth.login", "auth.login_failed"]


def test_failed_sign_ins_make_the_next_attempt_wait_then_the_right_password_works(
    console: Console,
) -> None:
    user_id, _ = console.add_user("ann", role="analyst", mfa=False)
    throttled = "Too many failed sign-ins: try again in 1 minute."
    with time_machine.travel(utcnow(), tick=False) as clock:
        seen = {}
        for name in ("ann", "nobody"):  # an existing and an unknown name: told the same
            at = console.page("pages/login.py").run()
            for _ in range(accounts.ACCOUNT_FREE_FAILURES):
                sign_in(at, name, "not the password")
                assert at.error[0].value == accounts.WRONG_CREDENTIALS
            sign_in(at, name, "not the password")
            sign_in(at, name, PASSWORD)
            seen[name] = at.error[0].value
        assert seen == {"ann": throttled, "nobody": throttled}
        assert ui.USER_ID not in at.session_state

        clock.shift(timedelta(seconds=61))  # the minute is over
        sign_in(at, "ann", PASSWORD)
        assert at.session_state[ui.USER_ID] == user_id
    assert actions(console).count("auth.login_throttled") == 2


def test_logout_ends_the_session_and_is_audited(console: Console) -> None:
    user_id, _ = console.add_user("ann", role="analyst", mfa=False)

    def menu() -> None:
        import ui

        user = ui.current_user()
        if user is not None:
            ui.account_menu(user)

    at = AppTest.from_function(menu, default_timeout=30)
    at.session_state[ui.USER_ID] = user_id
    at.session_state[ui.SIGNED_IN_AT] = utcnow()
    at.run()
    at.sidebar.button[0].click().run()
    assert ui.USER_ID not in at.session_state and at.session_state["logout"] is True
    assert console.user(user_id).sessions_revoked_at is not None
    assert actions(console) == ["auth.logout"]
