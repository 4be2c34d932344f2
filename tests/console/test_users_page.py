"""The Users page in AppTest: super-admins only, and every change asks for a fresh code in a
dialog once the last one is more than ten minutes old."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import ui
from core import accounts
from core.access import Actor
from core.models import AdminActionLog, User, UserRole, utcnow
from tests.support.pages import PASSWORD, Console, dialogs, error_under, next_code, state_dump

STALE = {ui.MFA_VERIFIED_AT: utcnow() - timedelta(minutes=11)}


def button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


def test_an_analyst_is_refused_even_with_the_url(console: Console) -> None:
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    for path in ("pages/users.py", "pages/audit.py"):
        at = console.page(path, analyst).run()
        assert not at.exception
        assert at.error[0].value == "Not allowed: this needs the super-admin role."
        assert not at.dataframe


def test_a_user_who_never_signed_in_shows_a_dash_not_none(console: Console) -> None:
    admin, _ = console.add_user("root")
    console.add_user("newbie", role="analyst", mfa=False)
    at = console.page("pages/users.py", admin).run()
    table = at.dataframe[0].value
    assert table["Last sign-in"].isna().all()  # nobody here signed in through the page
    assert at.dataframe[0].proto.placeholder == "—"  # what the grid shows for them


def test_nobody_signed_in_sees_nothing(console: Console) -> None:
    at = console.page("pages/users.py").run()
    assert at.warning[0].value == "Sign in first." and not at.dataframe


def test_a_stale_code_opens_the_step_up_dialog_and_the_change_follows_it(
    console: Console,
) -> None:
    admin, secret = console.add_user("root")
    bob, _ = console.add_user("bob", role="analyst", mfa=False)
    at = console.page("pages/users.py", admin, **STALE).run()
    assert not at.exception and not dialogs(at)
    button(at, "Disable").click().run()
    assert len(dialogs(at)) == 1
    assert console.user(bob).is_active  # nothing happened yet

    at.text_input(key="step_up_code").input("000000" if next_code(secret) != "000000" else "1")
    button(at, "Confirm and continue").click().run()
    assert dialogs(at) and "not right" in at.error[0].value
    assert console.user(bob).is_active

    at.text_input(key="step_up_code").input(next_code(secret))
    button(at, "Confirm and continue").click().run()
    assert not at.exception
    assert not console.user(bob).is_active
    assert at.toast[0].value == "bob is disabled."
    assert not dialogs(at) and ui.STEP_UP not in at.session_state
    with console.db.session() as session:
        trail = session.scalars(select(AdminActionLog.action).order_by(AdminActionLog.id)).all()
    assert trail == ["auth.step_up_failed", "auth.step_up", "user.disabled"]


def test_a_fresh_code_lets_changes_through_without_asking(console: Console) -> None:
    admin, _ = console.add_user("root")
    bob, _ = console.add_user("bob", role="analyst", mfa=False)
    at = console.page("pages/users.py", admin).run()  # verified just now
    assert button(at, "Change role").disabled  # until another role is picked
    at.selectbox(key="new_role").select(UserRole.SUPER_ADMIN).run()
    button(at, "Change role").click().run()
    assert not dialogs(at)
    assert console.user(bob).role == "super_admin"
    assert at.toast[0].value == "bob is now super-admin."


def test_adding_a_user_keeps_the_password_out_of_the_session_while_asking(
    console: Console,
) -> None:
    admin, secret = console.add_user("root")
    at = console.page("pages/users.py", admin, **STALE).run()
    fields = {field.label: field for field in at.text_input}
    fields["Username"].input("Carol")
    fields["Initial password"].input("sunlit quarry lantern")
    fields["Repeat it"].input("sunlit quarry lantern")
    button(at, "Add user").click().run()
    assert len(dialogs(at)) == 1
    assert "sunlit quarry lantern" not in state_dump(at)  # it waits encrypted

    at.text_input(key="step_up_code").input(next_code(secret))
    button(at, "Confirm and continue").click().run()
    assert at.toast[0].value == "Added carol (analyst)."
    with console.db.session() as session:
        carol = session.scalars(select(User).where(User.username == "carol")).one()
    assert carol.role == "analyst" and carol.password_hash.startswith("$2")
    assert "sunlit quarry lantern" not in state_dump(at)
    assert at.text_input(key="au_username").value == ""  # emptied for the next one


def test_a_guessable_initial_password_is_refused_with_the_reason(console: Console) -> None:
    admin, _ = console.add_user("root")
    at = console.page("pages/users.py", admin).run()  # verified just now
    for password, why in (
        ("alice-console-2026", "contains your username, name or email"),
        ("password1234", "This is a very common password"),
    ):
        fields = {field.label: field for field in at.text_input}
        fields["Username"].input("Alice")
        fields["Display name (optional)"].input("Alice Liddell")
        fields["Initial password"].input(password)
        fields["Repeat it"].input(password)
        button(at, "Add user").click().run()
        assert not at.exception and not dialogs(at)
        assert why in (error_under(at, "Initial password") or "")
        assert password not in state_dump(at)
    assert console.user_count() == 1


def fields(at: AppTest) -> dict[str, object]:
    return {field.label: field for field in at.text_input}


def test_add_user_keeps_what_was_typed_and_shows_each_error_beside_its_field(
    console: Console,
) -> None:
    admin, _ = console.add_user("root")
    at = console.page("pages/users.py", admin).run()  # verified just now
    typed = fields(at)
    typed["Username"].input("carol!")  # type: ignore[attr-defined]
    typed["Display name (optional)"].input("Carol Danvers")  # type: ignore[attr-defined]
    typed["Email (optional)"].input("carol at example")  # type: ignore[attr-defined]
    at.selectbox(key="au_role").select(UserRole.SUPER_ADMIN)
    typed["Initial password"].input("sunlit quarry lantern")  # type: ignore[attr-defined]
    typed["Repeat it"].input("sunlit quarry lanterns")  # type: ignore[attr-defined]
    button(at, "Add user").click().run()
    assert not at.exception and not dialogs(at)
    assert (error_under(at, "Username") or "").startswith("Usernames are 1–150 characters")
    assert (error_under(at, "Email (optional)") or "").startswith("Enter an email address")
    assert error_under(at, "Repeat it") == "The two passwords differ. Type the same password twice."
    assert error_under(at, "Display name (optional)") is None
    kept = {label: field.value for label, field in fields(at).items()}  # type: ignore[attr-defined]
    assert kept == {
        "Username": "carol!",
        "Display name (optional)": "Carol Danvers",
        "Email (optional)": "carol at example",
        "Initial password": "",  # typed again
        "Repeat it": "",
    }
    assert at.selectbox(key="au_role").value == UserRole.SUPER_ADMIN
    assert "sunlit quarry" not in state_dump(at)

    # Fixed fields lose their errors at the next submit; what is still wrong keeps its own.
    typed = fields(at)
    typed["Username"].input("root")  # type: ignore[attr-defined]
    typed["Email (optional)"].input("carol@example.org")  # type: ignore[attr-defined]
    typed["Initial password"].input("sunlit quarry lantern")  # type: ignore[attr-defined]
    typed["Repeat it"].input("sunlit quarry lantern")  # type: ignore[attr-defined]
    button(at, "Add user").click().run()
    assert error_under(at, "Username") == "The username 'root' is taken."  # from the database
    assert error_under(at, "Email (optional)") is None and error_under(at, "Repeat it") is None
    assert console.user_count() == 1

    typed = fields(at)
    typed["Username"].input("carol")  # type: ignore[attr-defined]
    typed["Initial password"].input("sunlit quarry lantern")  # type: ignore[attr-defined]
    typed["Repeat it"].input("sunlit quarry lantern")  # type: ignore[attr-defined]
    button(at, "Add user").click().run()
    assert not at.exception and at.toast[0].value == "Added carol (super-admin)."
    with console.db.session() as session:
        carol = session.scalars(select(User).where(User.username == "carol")).one()
    assert (carol.display_name, carol.email) == ("Carol Danvers", "carol@example.org")
    # Once added, the form is empty again for the next one.
    assert {
        field.value for field in at.text_input if field.key and field.key.startswith("au_")
    } == {""}
    assert at.selectbox(key="au_role").value == UserRole.ANALYST


def test_a_throttled_account_shows_as_such_until_it_is_unlocked(console: Console) -> None:
    admin, _ = console.add_user("root")
    bob, _ = console.add_user("bob", role="analyst", mfa=False)
    guesser = Actor(label="anonymous", ip_address="198.51.100.66")
    for _ in range(accounts.ACCOUNT_FREE_FAILURES + 1):
        with console.db.session() as session, session.begin():
            accounts.check_password(session, "bob", "not bob's password", guesser)
    at = console.page("pages/users.py", admin).run()
    table = at.dataframe[0].value
    assert dict(zip(table["Username"], table["Status"], strict=True)) == {
        "bob": "throttled",
        "root": "active",
    }
    [status] = [c.value for c in at.caption if c.value.startswith("Status:")]
    assert status.startswith("Status: **throttled** (someone must wait until")
    assert "5 failed sign-in(s) or code(s)" in status
    button(at, "Unlock").click().run()
    assert not at.exception and at.toast[0].value == "bob can sign in again."
    assert list(at.dataframe[0].value["Status"]) == ["active", "active"]
    assert button(at, "Unlock").disabled
    with console.db.session() as session:
        assert accounts.account_throttles(session, ["bob"]) == {}
        assert session.scalars(select(AdminActionLog.action)).all()[-1] == "user.unlocked"
    assert bob


def test_the_list_shows_accounts_without_secrets(console: Console) -> None:
    admin, _ = console.add_user("root")
    console.add_user("bob", role="analyst", mfa=False)
    at = console.page("pages/users.py", admin).run()
    table = at.dataframe[0].value
    assert list(table["Username"]) == ["bob", "root"]
    assert list(table["Authenticator"]) == ["not set up", "set up"]
    assert "password_hash" not in " ".join(table.columns) and PASSWORD not in table.to_csv()
