"""The sign-in cookie: streamlit-authenticator's token ({username, exp_date}, HS256 with
AI_CONSOLE_COOKIE_KEY, the library's CookieModel reads and writes the same), so the library's
session keys (`authentication_status`, `username`, `name`, `roles`, `logout`) stay in step;
core.accounts decides everything else. A restored cookie stands in for the password only, and
only until the account's sessions are revoked (logout, password change, MFA reset, disabling):
an enrolled user still types a code.

The cookie is written by a static iframe, not by the library's CookieManager component. That
component reports back after it loads and so asks for a rerun; a rerun arriving while someone
switches pages raced the page switch and left the new page half drawn (a browser test failed
about one run in twelve under load). A static iframe never reports back: it sets the cookie when
it loads, and because it is drawn with the same content in every run of the session, the
browser keeps it and does not run it again.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import jwt
import streamlit as st

from core import accounts
from core.models import utcnow
from ui.resources import cookie_key

COOKIE_NAME = "ai_console_session"


COOKIE_CHECKED = "auth_cookie_checked"


def expiry(signed_in_at: datetime) -> float:
    """The cookie's exp_date for a sign-in at `signed_in_at`: REMEMBER_SIGN_IN later, rounded up
    to the second, so the sign-in time read back from it is never before the real one."""
    return float(math.ceil((signed_in_at + accounts.REMEMBER_SIGN_IN).timestamp()))


def issued_at(token: dict[str, Any]) -> datetime:
    """When the sign-in behind a token happened (at most a second after the real time)."""
    return datetime.fromtimestamp(token["exp_date"], UTC) - accounts.REMEMBER_SIGN_IN


def cookie_writer(username: str, exp_date: float) -> None:
    """Set the sign-in cookie in this browser, from the sidebar of every run of the session.

    The token holds only [A-Za-z0-9_.-] characters (JWT) and the date is fixed, so the markup
    is the same run after run. Secure when the console is served over HTTPS."""
    if exp_date <= utcnow().timestamp():
        return
    token = jwt.encode({"username": username, "exp_date": exp_date}, cookie_key(), "HS256")
    expires = format_datetime(datetime.fromtimestamp(exp_date, UTC), usegmt=True)
    cookie = f"{COOKIE_NAME}={token}; Expires={expires}; Path=/; SameSite=Strict"
    st.iframe(
        "<script>parent.document.cookie = "
        f"'{cookie}' + (parent.location.protocol === 'https:' ? '; Secure' : '');</script>",
        height=1,
    )


def read_cookie() -> dict[str, Any] | None:
    """The token from the request's cookies, if its signature and expiry hold (read with
    PyJWT as the library's CookieModel does, from what st.context already has)."""
    raw = st.context.cookies.get(COOKIE_NAME)
    if not isinstance(raw, str):
        return None
    try:
        token = jwt.decode(raw, cookie_key(), algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return None
    fresh = float(token.get("exp_date", 0)) > utcnow().timestamp()
    return token if fresh and isinstance(token.get("username"), str) else None
