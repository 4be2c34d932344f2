"""AI Provider Console: the Streamlit entry point.

A thin router: page config, a ready database, the sign-in gate, then st.navigation built from the
signed-in user's role. A page a role may not see is never registered, and every page checks the
role again through core, because URLs can be typed. No user yet: only the setup page exists.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import ui
from core.models import UserRole

# The favicon is served from here: a Material icon would be fetched from fonts.gstatic.com,
# which a console on an internal network cannot reach.
ICON = str(Path(__file__).parent / "ui" / "icon.png")
st.set_page_config(page_title="AI Provider Console", page_icon=ICON, layout="wide")

ADMIN, ANALYST = UserRole.SUPER_ADMIN, UserRole.ANALYST

# One line per page: file, title, icon, roles that see it. A role's first page opens first.
PAGES = [
    ("pages/providers.py", "Providers", ":material/hub:", {ADMIN}),
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
    st.title("AI Provider Console")
    st.error(problem)
    st.stop()

ui.resume_from_cookie()
user = ui.current_user()
if user is None:
    only = SETUP if ui.needs_setup() else SIGN_IN
    navigation = st.navigation([st.Page(only[0], title=only[1], icon=only[2])], position="hidden")
else:
    if user.needs_enrolment:  # nothing else until an authenticator app is set up
        pages = [st.Page(ACCOUNT[0], title=ACCOUNT[1], icon=ACCOUNT[2])]
    else:
        pages = [st.Page(f, title=t, icon=i) for f, t, i, roles in PAGES if user.role in roles]
    navigation = st.navigation(pages)
    ui.account_menu(user)
navigation.run()
