"""The sign-in cookie is streamlit-authenticator's: its CookieController signs {username, expiry}
with AI_CONSOLE_COOKIE_KEY (HS256) and its CookieManager component writes it in the browser, once,
right after a sign-in. We keep the library's session keys (`authentication_status`, `username`,
`name`, `roles`, `logout`) in step so that code works; core.accounts decides everything else. A
restored cookie stands in for the password only, and only until the account's sessions are
revoked (logout, password change, MFA reset, disabling): an enrolled user still types a code.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt
import streamlit as st
from streamlit_authenticator.controllers import CookieController

from core import accounts
from core.models import utcnow
from ui.resources import cookie_key

SET_COOKIE = "auth_set_cookie"  # runs left that write the sign-in cookie


COOKIE_CHECKED = "auth_cookie_checked"


COOKIE_NAME = "ai_console_session"


# Written in two successive runs: the library's read-all component can report back (and end the
# run that drew the writer) before its write component has loaded.
COOKIE_WRITES = 2


@st.fragment
def cookie_writer() -> None:
    """Write the sign-in cookie with the library's component, in the runs right after a sign-in.

    A fragment, because the component asks for a rerun when it reports back: here that reruns
    only this fragment, never the page someone is already clicking in. It sits last in the
    sidebar, so drawing it for a run or two shifts no other element.
    """
    left = st.session_state.get(SET_COOKIE, 0)
    if left:
        st.session_state[SET_COOKIE] = left - 1
        cookies().set_cookie()


def cookies() -> CookieController:
    days = accounts.REMEMBER_SIGN_IN / timedelta(days=1)
    return CookieController(COOKIE_NAME, cookie_key(), days)


def read_cookie() -> dict[str, Any] | None:
    """The library's token from the request's cookies, if its signature and expiry hold.

    Read with PyJWT as the library's CookieModel does, but without constructing it: that would
    mount its cookie component (and cost a rerun) only to read what st.context already has.
    """
    raw = st.context.cookies.get(COOKIE_NAME)
    if not isinstance(raw, str):
        return None
    try:
        token = jwt.decode(raw, cookie_key(), algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return None
    fresh = float(token.get("exp_date", 0)) > utcnow().timestamp()
    return token if fresh and isinstance(token.get("username"), str) else None
