"""Who is signed in to this browser session, signing in and out, and resuming a session from
the sign-in cookie.

core never imports streamlit; this module turns Streamlit's world into core's terms (one Session
per unit of work, an Actor carrying the IP address and user agent) and back. Session state holds
ids and timestamps only: never a password, code, setup token or plaintext TOTP secret (a secret
being enrolled is kept Fernet-encrypted until it is confirmed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import streamlit as st

from core import accounts
from core.access import Actor
from core.models import UserRole, utcnow
from ui.cookie import COOKIE_CHECKED, cookie_writer, expiry, issued_at, read_cookie
from ui.feedback import flash
from ui.resources import transaction

# Session-state keys (values are ids, datetimes and flags only).
USER_ID = "auth_user_id"
SIGNED_OUT = "signed_out"  # set by sign_out, read once by just_signed_out


SIGNED_IN_AT = "auth_signed_in_at"


MFA_VERIFIED_AT = "mfa_verified_at"  # last TOTP code accepted: sign-in, enrolment or step-up


PENDING_USER_ID = "auth_pending_user_id"  # password or cookie accepted, TOTP code still due


PENDING_SINCE = "auth_pending_since"


ENROLMENT = "mfa_enrolment_encrypted"  # Fernet token of the secret being enrolled


STEP_UP = "step_up_pending"


COOKIE_EXPIRY = "auth_cookie_expiry"  # exp_date of the sign-in cookie this session writes


_LIBRARY_KEYS = ("authentication_status", "username", "name", "roles", "email")


CODE_ENTRY_TIMEOUT = timedelta(minutes=5)  # to type the code after the password


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
        user = accounts.session_user(session, user_id, st.session_state[SIGNED_IN_AT])
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


def begin_code_entry(outcome: accounts.Outcome) -> None:
    """The password (or cookie) passed and a TOTP code is due: remember whose, for a while."""
    st.session_state[PENDING_USER_ID] = outcome.user_id
    st.session_state[PENDING_SINCE] = outcome.at


def pending_code_user() -> int | None:
    """The user whose TOTP code the sign-in page is waiting for, if that has not timed out."""
    user_id = st.session_state.get(PENDING_USER_ID)
    since = st.session_state.get(PENDING_SINCE)
    if user_id is None or since is None:
        return None
    if utcnow() - since > CODE_ENTRY_TIMEOUT:
        cancel_code_entry()
        flash("info", "The sign-in timed out. Enter your password again.")
        return None
    return user_id


def cancel_code_entry() -> None:
    st.session_state.pop(PENDING_USER_ID, None)
    st.session_state.pop(PENDING_SINCE, None)


def sign_in(outcome: accounts.Outcome) -> None:
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
    state[COOKIE_EXPIRY] = expiry(outcome.at)


def renew_session(outcome: accounts.Outcome) -> None:
    """After a password change ended every session: keep this one, with a new cookie."""
    st.session_state[SIGNED_IN_AT] = outcome.at
    st.session_state[COOKIE_EXPIRY] = expiry(outcome.at)


def account_menu(user: CurrentUser) -> None:
    """The sidebar's who-am-I line and the Log out button."""
    with st.sidebar:
        st.caption(f"Signed in as **{user.display_name}** ({user.role_label})")
        if st.button("Log out", icon=":material/logout:", help="Signs you out in every browser"):
            sign_out()
            st.rerun()
        exp_date = st.session_state.get(COOKIE_EXPIRY)
        if exp_date is not None:  # signed in here, not resumed from the cookie
            cookie_writer(user.username, exp_date)


def sign_out() -> None:
    """End this account's sessions everywhere (audited); its cookies stop working too.

    The cookie is not deleted in the browser: revoking it in the database is what counts, and
    the library's delete needs a component whose extra rerun races the next sign-in.
    """
    user = current_user()
    if user is not None:
        with transaction() as session:
            accounts.sign_out(session, actor(user))
    _forget()
    st.session_state["logout"] = True  # the library then ignores its cookie in this session
    st.session_state[SIGNED_OUT] = True
    flash("info", "You are signed out.")


def just_signed_out() -> bool:
    """True once after sign_out: the next sign-in starts from the front page, not the page
    that was open (a link typed or bookmarked keeps its page through sign-in)."""
    return bool(st.session_state.pop(SIGNED_OUT, False))


def _forget() -> None:
    state = st.session_state
    for key in (USER_ID, SIGNED_IN_AT, MFA_VERIFIED_AT, ENROLMENT, STEP_UP, COOKIE_EXPIRY):
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
        and not state.get(COOKIE_CHECKED)
    ):
        state[COOKIE_CHECKED] = True
        _resume(read_cookie())


def _resume(token: dict[str, Any] | None) -> None:
    if not token:
        return
    # The library's token holds the username and its expiry; it was issued REMEMBER_SIGN_IN
    # before that. That issue time names this browser's sign-in: core audits its first resume
    # only, so the cookie is kept as it is (a rewrite would look like a new sign-in on the next
    # page load, and would stretch the 12 hours without a password).
    with transaction() as session:
        outcome = accounts.resume_session(session, token["username"], issued_at(token), origin())
    if outcome.needs_code:
        begin_code_entry(outcome)
    elif outcome.ok:
        sign_in(outcome)
        st.session_state.pop(COOKIE_EXPIRY, None)
