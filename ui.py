"""Streamlit glue for app.py and pages/: shared resources, who is signed in, step-up MFA.

core never imports streamlit; this module turns Streamlit's world into core's terms (one Session
per unit of work, an Actor carrying the IP address and user agent) and back. Session state holds
ids and timestamps only: never a password, code, setup token or plaintext TOTP secret (a secret
being enrolled is kept Fernet-encrypted until it is confirmed).

The sign-in cookie is streamlit-authenticator's: its CookieController signs {username, expiry}
with AI_CONSOLE_COOKIE_KEY (HS256) and its CookieManager component writes it in the browser, once,
right after a sign-in. We keep the library's session keys (`authentication_status`, `username`,
`name`, `roles`, `logout`) in step so that code works; core.auth decides everything else. A
restored cookie stands in for the password only, and only until the account's sessions are
revoked (logout, password change, MFA reset, disabling): an enrolled user still types a code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from streamlit_authenticator.controllers import CookieController

from core import auth
from core.access import PermissionDenied, StepUpRequired, require_role
from core.admin import AdminError
from core.audit import Actor
from core.config import ConfigError, Settings
from core.crypto import SecretBox, load_cipher
from core.db import make_engine, make_session_factory, schema_status, session_scope
from core.models import UserRole

# Session-state keys (values are ids, datetimes and flags only).
USER_ID = "auth_user_id"
SIGNED_IN_AT = "auth_signed_in_at"
MFA_VERIFIED_AT = "mfa_verified_at"  # last TOTP code accepted: sign-in, enrolment or step-up
PENDING_USER_ID = "auth_pending_user_id"  # password or cookie accepted, TOTP code still due
PENDING_SINCE = "auth_pending_since"
ENROLMENT = "mfa_enrolment_encrypted"  # Fernet token of the secret being enrolled
STEP_UP = "step_up_pending"
FLASH = "flash"
_SET_COOKIE = "auth_set_cookie"  # runs left that write the sign-in cookie
_COOKIE_CHECKED = "auth_cookie_checked"
_LIBRARY_KEYS = ("authentication_status", "username", "name", "roles", "email")

COOKIE_NAME = "ai_console_session"
CODE_ENTRY_TIMEOUT = timedelta(minutes=5)  # to type the code after the password
# Written in two successive runs: the library's read-all component can report back (and end the
# run that drew the writer) before its write component has loaded.
_COOKIE_WRITES = 2


# --- resources: one per process ----------------------------------------------------------------


@st.cache_resource
def settings() -> Settings:
    return Settings.from_env()


@st.cache_resource
def engine() -> Engine:
    return make_engine(settings())


@st.cache_resource
def session_factory() -> sessionmaker[Session]:
    return make_session_factory(engine())


@st.cache_resource
def cipher() -> SecretBox:
    return load_cipher(settings())


@st.cache_resource
def _cookie_key() -> str:
    return auth.cookie_key(settings())


@contextmanager
def transaction() -> Iterator[Session]:
    """A fresh Session for one unit of work: committed on success, rolled back on error."""
    with session_scope(session_factory()) as session:
        yield session


def startup_problem() -> str | None:
    """What the operator must fix before anyone can use the console (settings, schema), or None."""
    try:
        _ready()
    except ConfigError as exc:
        return f"The console is not configured: {exc}."
    except _NotMigrated as exc:
        return str(exc)
    return None


class _NotMigrated(Exception):
    pass


@st.cache_resource
def _ready() -> None:
    # Cached once it passes (a raised exception is not cached), so a healthy console does not
    # read the migrations folder on every rerun.
    cipher()
    _cookie_key()
    status = schema_status(engine())
    if not status.up_to_date:
        raise _NotMigrated(
            f"The database schema is at {status.current or 'nothing'} but this version needs "
            f"{status.head}. Run `python -m core migrate` (or `make run`) and reload."
        )


def needs_setup() -> bool:
    with transaction() as session:
        return auth.needs_setup(session)


# --- who is asking ---------------------------------------------------------------------------


def origin() -> Actor:
    """The browser behind this request, before anyone is signed in."""
    ip = st.context.ip_address
    agent = st.context.headers.get("User-Agent")
    return Actor(
        label="anonymous",
        # Streamlit hides loopback addresses (None); say so rather than record nothing.
        ip_address=ip if isinstance(ip, str) else "localhost" if ip is None else None,
        user_agent=agent if isinstance(agent, str) else None,
    )


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    display_name: str
    role: UserRole
    has_mfa: bool

    @property
    def needs_enrolment(self) -> bool:
        """Super-admins must set up an authenticator app before anything else."""
        return self.role is UserRole.SUPER_ADMIN and not self.has_mfa

    @property
    def role_label(self) -> str:
        return "super-admin" if self.role is UserRole.SUPER_ADMIN else "analyst"


def current_user() -> CurrentUser | None:
    """The signed-in user, re-read from the database: a disabled or signed-out account ends here."""
    user_id = st.session_state.get(USER_ID)
    if user_id is None:
        return None
    with transaction() as session:
        user = auth.session_user(session, user_id, st.session_state[SIGNED_IN_AT])
        if user is None:
            _forget()
            flash("info", "You were signed out. Sign in again to continue.")
            return None
        return CurrentUser(
            id=user.id,
            username=user.username,
            display_name=user.display_name or user.username,
            role=UserRole(user.role),
            has_mfa=user.totp_secret_encrypted is not None,
        )


def actor(user: CurrentUser) -> Actor:
    """The Actor core services want: who, from where, and when they last proved a TOTP code."""
    return replace(
        origin(),
        label=user.username,
        user_id=user.id,
        mfa_verified_at=st.session_state.get(MFA_VERIFIED_AT),
    )


def require_user(*roles: UserRole, during_enrolment: bool = False) -> CurrentUser:
    """For the top of a page: the signed-in user holding one of `roles`, or stop the page.

    The role is checked by core against the database, not just by which pages are listed,
    because a page URL can be typed.
    """
    user = current_user()
    if user is None:
        st.warning("Sign in first.")
        st.stop()
    assert user is not None
    if user.needs_enrolment and not during_enrolment:
        st.warning("Set up your authenticator app on the Account page first.")
        st.stop()
    if roles:
        with transaction() as session:
            try:
                require_role(session, actor(user), *roles)
            except PermissionDenied as exc:
                st.error(f"Not allowed: {exc}.", icon=":material/block:")
                st.stop()
    show_flash()
    pending = st.session_state.get(STEP_UP)
    if pending is not None:
        _step_up_dialog(pending)
    return user


# --- signing in and out ----------------------------------------------------------------------


def begin_code_entry(outcome: auth.Outcome) -> None:
    """The password (or cookie) passed and a TOTP code is due: remember whose, for a while."""
    st.session_state[PENDING_USER_ID] = outcome.user_id
    st.session_state[PENDING_SINCE] = outcome.at


def pending_code_user() -> int | None:
    """The user whose TOTP code the sign-in page is waiting for, if that has not timed out."""
    user_id = st.session_state.get(PENDING_USER_ID)
    since = st.session_state.get(PENDING_SINCE)
    if user_id is None or since is None:
        return None
    if datetime.now(UTC) - since > CODE_ENTRY_TIMEOUT:
        cancel_code_entry()
        flash("info", "The sign-in timed out. Enter your password again.")
        return None
    return user_id


def cancel_code_entry() -> None:
    st.session_state.pop(PENDING_USER_ID, None)
    st.session_state.pop(PENDING_SINCE, None)


def sign_in(outcome: auth.Outcome) -> None:
    """Make this browser session the session of `outcome.user_id` (core has checked everything)."""
    assert outcome.ok and outcome.user_id is not None and outcome.at is not None
    cancel_code_entry()
    state = st.session_state
    state[USER_ID] = outcome.user_id
    state[SIGNED_IN_AT] = outcome.at
    state[MFA_VERIFIED_AT] = outcome.verified_at
    user = current_user()
    assert user is not None
    state.update(
        authentication_status=True,
        username=user.username,
        name=user.display_name,
        roles=[user.role.value],
        logout=None,
    )
    state[_SET_COOKIE] = _COOKIE_WRITES


def renew_session(outcome: auth.Outcome) -> None:
    """After a password change ended every session: keep this one, with a new cookie."""
    st.session_state[SIGNED_IN_AT] = outcome.at
    st.session_state[_SET_COOKIE] = _COOKIE_WRITES


def account_menu(user: CurrentUser) -> None:
    """The sidebar's who-am-I line and the Log out button."""
    with st.sidebar:
        st.caption(f"Signed in as **{user.display_name}** ({user.role_label})")
        if st.button("Log out", icon=":material/logout:", help="Signs you out in every browser"):
            sign_out()
            st.rerun()
        _cookie_writer()


def sign_out() -> None:
    """End this account's sessions everywhere (audited); its cookies stop working too.

    The cookie is not deleted in the browser: revoking it in the database is what counts, and
    the library's delete needs a component whose extra rerun races the next sign-in.
    """
    user = current_user()
    if user is not None:
        with transaction() as session:
            auth.sign_out(session, actor(user))
    _forget()
    st.session_state["logout"] = True  # the library then ignores its cookie in this session
    flash("info", "You are signed out.")


def _forget() -> None:
    state = st.session_state
    for key in (USER_ID, SIGNED_IN_AT, MFA_VERIFIED_AT, ENROLMENT, STEP_UP, _SET_COOKIE):
        state.pop(key, None)
    cancel_code_entry()
    for key in _LIBRARY_KEYS:
        state[key] = None


def resume_from_cookie() -> None:
    """Once per browser session, from app.py: continue a session from the sign-in cookie."""
    state = st.session_state
    state.setdefault("logout", None)
    if (
        state.get(USER_ID) is None
        and state.get(PENDING_USER_ID) is None
        and not state.get("logout")
        and not state.get(_COOKIE_CHECKED)
    ):
        state[_COOKIE_CHECKED] = True
        _resume(_read_cookie())


@st.fragment
def _cookie_writer() -> None:
    """Write the sign-in cookie with the library's component, in the runs right after a sign-in.

    A fragment, because the component asks for a rerun when it reports back: here that reruns
    only this fragment, never the page someone is already clicking in. It sits last in the
    sidebar, so drawing it for a run or two shifts no other element.
    """
    left = st.session_state.get(_SET_COOKIE, 0)
    if left:
        st.session_state[_SET_COOKIE] = left - 1
        _cookies().set_cookie()


def _cookies() -> CookieController:
    days = auth.REMEMBER_SIGN_IN / timedelta(days=1)
    return CookieController(COOKIE_NAME, _cookie_key(), days)


def _read_cookie() -> dict[str, Any] | None:
    """The library's token from the request's cookies, if its signature and expiry hold.

    Read with PyJWT as the library's CookieModel does, but without constructing it: that would
    mount its cookie component (and cost a rerun) only to read what st.context already has.
    """
    raw = st.context.cookies.get(COOKIE_NAME)
    if not isinstance(raw, str):
        return None
    try:
        token = jwt.decode(raw, _cookie_key(), algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return None
    fresh = float(token.get("exp_date", 0)) > datetime.now(UTC).timestamp()
    return token if fresh and isinstance(token.get("username"), str) else None


def _resume(token: dict[str, Any] | None) -> None:
    if not token:
        return
    # The library's token holds the username and its expiry; it was issued REMEMBER_SIGN_IN
    # before that. That issue time names this browser's sign-in: core audits its first resume
    # only, so the cookie is kept as it is (a rewrite would look like a new sign-in on the next
    # page load, and would stretch the 12 hours without a password).
    issued_at = datetime.fromtimestamp(token["exp_date"], UTC) - auth.REMEMBER_SIGN_IN
    with transaction() as session:
        outcome = auth.resume_session(session, token["username"], issued_at, origin())
    if outcome.needs_code:
        begin_code_entry(outcome)
    elif outcome.ok:
        sign_in(outcome)
        st.session_state.pop(_SET_COOKIE, None)


# --- formatting -------------------------------------------------------------------------------


def compact_count(n: int) -> str:
    """Exact below a million; beyond, compact enough for a metric tile ("19.6 M")."""
    if n < 1_000_000:
        return f"{n:,}"
    if n < 1_000_000_000:
        return f"{n / 1_000_000:.1f} M"
    return f"{n / 1_000_000_000:.2f} B"


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# GitHub-flavoured Markdown links bare URLs and e-mail addresses after escapes are resolved, so
# a WORD JOINER (U+2060, invisible) goes where its patterns need two characters side by side.
_BARE_LINKS = re.compile(r"(?<=:)(?=//)|(?<=@)|(?<=www)(?=\.)", re.IGNORECASE)


def plain(text: str) -> str:
    """`text` for a Markdown-rendering element (st.error, st.caption, …) that shows it exactly
    as written: provider answers and user input are data, never links, images or formatting.

    Every ASCII punctuation mark is backslash-escaped (CommonMark allows it for any), which
    also defeats Streamlit's :directives[] and $math$; bare URLs and addresses are broken up
    invisibly so they are not linked. Newlines are kept as line breaks.
    """
    unlinked = _BARE_LINKS.sub("\u2060", text)
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", unlinked).replace("\n", "  \n")


# --- messages that survive a rerun -----------------------------------------------------------


def flash(kind: str, message: str) -> None:
    """Show `message` on the next run (after st.rerun()); kind: success, info, warning, error."""
    st.session_state[FLASH] = (kind, message)


_FLASH_ICONS = {
    "success": ":material/check_circle:",
    "info": ":material/info:",
    "warning": ":material/warning:",
    "error": ":material/error:",
}


def show_flash() -> None:
    """Tell the result of the last action as a toast (it does not push the page down)."""
    kind, message = st.session_state.pop(FLASH, (None, None))
    if message:
        st.toast(message, icon=_FLASH_ICONS[kind])


# --- step-up MFA -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sealed:
    """A secret argument (an initial password) kept encrypted while its action waits."""

    token: str = field(repr=False)


def seal(secret: str) -> Sealed:
    return Sealed(cipher().encrypt(secret))


def unseal(sealed: Sealed) -> str:
    """The secret back, for the one call that needs it (never store the result)."""
    return cipher().decrypt(sealed.token)


@dataclass(frozen=True)
class _Pending:
    """A sensitive call waiting for a step-up code: plain data, so nothing else is kept alive."""

    what: str
    call: Callable[..., object]
    args: tuple[object, ...]
    done: str


def run_sensitive(what: str, call: Callable[..., object], *args: object, done: str) -> None:
    """Run `call(session, actor, *args)`; if it needs a fresh TOTP code, ask in a dialog first.

    `what` names the action in the dialog, `done` is flashed on success. Pass secrets in `args`
    as `seal(...)`. Refusals and input errors are shown where this is called.
    """
    pending = _Pending(what, call, args, done)
    result = _attempt(pending)
    if result == "done":
        st.rerun()
    if result == "step-up":
        st.session_state[STEP_UP] = pending
        _step_up_dialog(pending)


def _attempt(pending: _Pending) -> str:
    """'done' (message flashed), 'step-up' (a fresh code is needed) or 'failed' (error shown)."""
    user = current_user()
    if user is None:
        st.error("Sign in again to continue.")
        return "failed"
    args = [unseal(a) if isinstance(a, Sealed) else a for a in pending.args]
    try:
        with transaction() as session:
            pending.call(session, actor(user), *args)
    except StepUpRequired:
        return "step-up"
    except (PermissionDenied, auth.AuthError, AdminError) as exc:
        text = str(exc)  # may quote a provider's answer: shown as plain text
        st.error(plain(text[:1].upper() + text[1:].rstrip(".") + "."))
        return "failed"
    flash("success", pending.done)
    return "done"


def _cancel_step_up() -> None:
    st.session_state.pop(STEP_UP, None)


@st.dialog("Confirm it's you", on_dismiss=_cancel_step_up)
def _step_up_dialog(pending: _Pending) -> None:
    st.write(
        f"**{pending.what}** needs a fresh code from your authenticator app: the last one "
        "you entered is more than ten minutes old."
    )
    with st.form("step_up", clear_on_submit=True, border=False):
        code = st.text_input(
            "6-digit code", max_chars=6, autocomplete="one-time-code", key="step_up_code"
        )
        confirmed = st.form_submit_button("Confirm and continue", type="primary")
    if st.button("Cancel", key="step_up_cancel"):
        _cancel_step_up()
        st.rerun()
    if not confirmed:
        return
    user = current_user()
    if user is None:
        _cancel_step_up()
        st.rerun()
    assert user is not None
    with transaction() as session:
        outcome = auth.check_step_up_code(session, actor(user), code, cipher())
    if not outcome.ok:
        st.error(outcome.error)
        return
    st.session_state[MFA_VERIFIED_AT] = outcome.verified_at
    _cancel_step_up()
    if _attempt(pending) == "done":
        st.rerun()
