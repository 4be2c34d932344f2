"""AI Provider Console: the Streamlit entry point.

A thin router: page config, a ready database, the sign-in gate, then st.navigation built from the
signed-in user's role. A page a role may not see is never registered, and every page checks the
role again through core, because URLs can be typed. No user yet: only the setup page exists.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from pathlib import Path

import streamlit as st

# The favicon is served from here: a Material icon would be fetched from fonts.gstatic.com,
# which a console on an internal network cannot reach.
HERE = Path(__file__).parent
ICON = str(HERE / "ui" / "icon.png")
st.set_page_config(page_title="AI Provider Console", page_icon=ICON, layout="wide")

# The first run in a fresh server process spends seconds importing core (SQLAlchemy, bcrypt,
# genai-prices...): say so instead of leaving the first visitor a blank page. Later runs find
# the modules loaded and draw nothing here, so clicks do not flash it.
loading = st.empty()
if "ui" not in sys.modules:
    loading.info("Starting the console…", icon=":material/hourglass_top:")

import ui  # noqa: E402  (after the loading state, which is why it is here)
from core.models import UserRole  # noqa: E402

ADMIN, ANALYST = UserRole.SUPER_ADMIN, UserRole.ANALYST

# One line per page: file, title, icon, roles that see it. A role's first page opens first.
PAGES = [
    ("pages/providers.py", "Providers", ":material/hub:", {ADMIN}),
    ("pages/alerts.py", "Alerts", ":material/notifications:", {ADMIN}),
    ("pages/users.py", "Users", ":material/group:", {ADMIN}),
    ("pages/audit.py", "Audit log", ":material/policy:", {ADMIN}),
    ("pages/usage.py", "Usage", ":material/query_stats:", {ADMIN, ANALYST}),
    ("pages/account.py", "Account", ":material/account_circle:", {ADMIN, ANALYST}),
]
SETUP = ("pages/setup.py", "Set up", ":material/rocket_launch:")
SIGN_IN = ("pages/login.py", "Sign in", ":material/login:")
ACCOUNT = ("pages/account.py", "Account", ":material/account_circle:")

problem = ui.startup_problem()
if problem:
    loading.empty()
    st.title("AI Provider Console")
    st.error(problem)
    st.stop()


def _path(file: str) -> str:
    return Path(file).stem  # Streamlit's own url_path for a page file


def _stand_ins(file: str, title: str) -> list[st.Page]:
    """`file`'s page under every other page's address, unlisted: a reload or a bookmark of
    /users before sign-in shows the sign-in page (not "Page not found"), and the address stays,
    so once signed in the user lands on the page asked for. (Functions running the file:
    Streamlit keeps one page per file, so the file itself cannot be registered twice.)"""
    script = str(HERE / file)
    return [
        st.Page(lambda: runpy.run_path(script), title=title, url_path=_path(f), visibility="hidden")
        for f, *_ in PAGES
        if _path(f) != _path(file)
    ]


def _not_for(title: str, roles: set[UserRole], role: str) -> Callable[[], None]:
    """A page `role` may not open, under that page's address: says so in words (a typed URL
    would otherwise show "Page not found")."""
    who = " and ".join(sorted(f"{r.value.replace('_', '-')}s" for r in roles))
    article = "an" if role[0] in "aeiou" else "a"

    def refusal() -> None:
        st.title(title)
        st.warning(f"{title} is for {who}; you are signed in as {article} {role}.")

    return refusal


ui.resume_from_cookie()
user = ui.current_user()
if user is None:
    only = SETUP if ui.needs_setup() else SIGN_IN
    entry = st.Page(only[0], title=only[1], icon=only[2], default=True)
    navigation = st.navigation([entry, *_stand_ins(only[0], only[1])], position="hidden")
    if ui.just_signed_out():  # start again from the front, not from the page left
        st.switch_page(entry)
else:
    if user.needs_enrolment:  # nothing else until an authenticator app is set up
        entry = st.Page(ACCOUNT[0], title=ACCOUNT[1], icon=ACCOUNT[2], default=True)
        pages = [entry, *_stand_ins(ACCOUNT[0], ACCOUNT[1])]
    else:
        pages = [st.Page(f, title=t, icon=i) for f, t, i, roles in PAGES if user.role in roles]
        pages += [
            st.Page(
                _not_for(t, roles, user.role.replace("_", "-")),
                title=t,
                url_path=_path(f),
                visibility="hidden",
            )
            for f, t, _, roles in PAGES
            if user.role not in roles
        ]
    # Our own sidebar links, from the same list: Streamlit's sidebar is off
    # (client.showSidebarNavigation), because before any session has run this file it would
    # list the raw file names of pages/ to a visitor who has not signed in.
    navigation = st.navigation(pages, position="hidden")
    ui.page_links(pages)
    ui.account_menu(user)
loading.empty()
navigation.run()
