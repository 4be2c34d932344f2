"""The top of every page: the signed-in user with a role the page allows, or the page stops.

Also where what survives a rerun is shown: flashed messages and an open step-up dialog."""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from core.access import PermissionDenied, require_role
from core.models import UserRole
from ui.feedback import show_flash
from ui.resources import transaction
from ui.session import STEP_UP, CurrentUser, actor, current_user
from ui.step_up import step_up_dialog


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
        step_up_dialog(pending)
    return user


def through_the_app() -> None:
    """Make sure app.py, not this page file, is what runs (call it first in every page).

    While no session has run app.py's st.navigation yet, Streamlit treats pages/ as an old-style
    multipage folder: the first request a fresh server gets for /users runs pages/users.py
    directly (no sign-in page, no role's navigation, raw file names in the sidebar). Switch that
    off and run again: app.py then runs and opens the page asked for, for this session and all
    later ones."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
