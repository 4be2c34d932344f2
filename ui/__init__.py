"""Streamlit glue for app.py and pages/: the one place that knows both Streamlit and core.

core never imports streamlit; this package turns Streamlit's world into core's terms (one
Session per unit of work, an Actor carrying the IP address and user agent) and back.
resources.py holds what there is one of per process, session.py who is signed in, cookie.py
the sign-in cookie, navigation.py the sidebar's page links, step_up.py the fresh code
sensitive changes need, feedback.py what the console tells people, forms.py field errors
and typed secrets. Pages use the names below (`import ui`).
"""

from ui.cookie import (
    COOKIE_NAME,
)
from ui.feedback import (
    compact_count,
    flash,
    plain,
    show_flash,
)
from ui.forms import (
    FieldErrors,
    Sealed,
    forget,
    seal,
    seal_typed,
    secret_box,
    take_typed,
    typed,
    unseal,
)
from ui.gate import require_user, through_the_app
from ui.navigation import page_links
from ui.resources import (
    cipher,
    engine,
    needs_setup,
    outbox,
    session_factory,
    settings,
    startup_problem,
    transaction,
)
from ui.session import (
    CODE_ENTRY_TIMEOUT,
    ENROLMENT,
    MFA_VERIFIED_AT,
    PENDING_SINCE,
    PENDING_USER_ID,
    SIGNED_IN_AT,
    STEP_UP,
    USER_ID,
    CurrentUser,
    account_menu,
    actor,
    begin_code_entry,
    cancel_code_entry,
    current_user,
    just_signed_out,
    origin,
    pending_code_user,
    renew_session,
    resume_from_cookie,
    sign_in,
    sign_out,
)
from ui.step_up import run_sensitive

__all__ = [
    "CODE_ENTRY_TIMEOUT",
    "COOKIE_NAME",
    "ENROLMENT",
    "MFA_VERIFIED_AT",
    "PENDING_SINCE",
    "PENDING_USER_ID",
    "SIGNED_IN_AT",
    "STEP_UP",
    "USER_ID",
    "CurrentUser",
    "FieldErrors",
    "Sealed",
    "account_menu",
    "actor",
    "begin_code_entry",
    "cancel_code_entry",
    "cipher",
    "compact_count",
    "current_user",
    "engine",
    "flash",
    "forget",
    "just_signed_out",
    "needs_setup",
    "origin",
    "outbox",
    "page_links",
    "pending_code_user",
    "plain",
    "renew_session",
    "require_user",
    "resume_from_cookie",
    "run_sensitive",
    "seal",
    "seal_typed",
    "secret_box",
    "session_factory",
    "settings",
    "show_flash",
    "sign_in",
    "sign_out",
    "startup_problem",
    "take_typed",
    "through_the_app",
    "transaction",
    "typed",
    "unseal",
]
