"""Step-up MFA: a sensitive change runs only after a TOTP code verified in the last ten minutes;
otherwise a dialog asks for one and then runs it. A secret typed into a form is kept sealed
(Fernet-encrypted, ui.forms) while the dialog is open, never in clear."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from core import accounts
from core.access import PermissionDenied, StepUpRequired
from core.admin import AdminError
from ui.feedback import flash, plain
from ui.forms import FieldErrors, Sealed, unseal
from ui.forms import forget as empty_fields
from ui.resources import cipher, transaction
from ui.session import MFA_VERIFIED_AT, STEP_UP, actor, current_user


@dataclass(frozen=True)
class _Pending:
    """A sensitive call waiting for a step-up code: plain data, so nothing else is kept alive."""

    what: str
    call: Callable[..., object]
    args: tuple[object, ...]
    done: str
    forget: tuple[str, ...] = ()


def run_sensitive(
    what: str,
    call: Callable[..., object],
    *args: object,
    done: str,
    errors: FieldErrors | None = None,
    forget: tuple[str, ...] = (),
) -> None:
    """Run `call(session, actor, *args)`; if it needs a fresh TOTP code, ask in a dialog first.

    `what` names the action in the dialog, `done` is flashed on success (or what the call
    returned, when that is a str: it knows what happened). Pass secrets in `args` as
    `seal(...)`. Refusals and input errors are shown where this is called: an AuthError
    about one field under that field of `errors` (the form's), when there is one. The form
    widgets `forget` names are emptied on success (the form kept them through errors).
    """
    pending = _Pending(what, call, args, done, forget)
    result = _attempt(pending, errors)
    if result == "done":
        st.rerun()
    if result == "step-up":
        st.session_state[STEP_UP] = pending
        step_up_dialog(pending)


def _attempt(pending: _Pending, errors: FieldErrors | None = None) -> str:
    """'done' (message flashed), 'step-up' (a fresh code is needed) or 'failed' (error shown)."""
    user = current_user()
    if user is None:
        st.error("Sign in again to continue.")
        return "failed"
    args = [unseal(a) if isinstance(a, Sealed) else a for a in pending.args]
    try:
        with transaction() as session:
            outcome = pending.call(session, actor(user), *args)
    except StepUpRequired:
        return "step-up"
    except (PermissionDenied, accounts.AuthError, AdminError) as exc:
        text = str(exc)  # may quote a provider's answer: shown as plain text
        text = text[:1].upper() + text[1:].rstrip(".") + "."
        field = getattr(exc, "field", None)
        if errors is not None and field is not None:
            errors.show({field: text})
        else:
            st.error(plain(text))
        return "failed"
    empty_fields(*pending.forget)
    flash("success", outcome if isinstance(outcome, str) else pending.done)
    return "done"


def _cancel_step_up() -> None:
    st.session_state.pop(STEP_UP, None)


@st.dialog("Confirm it's you", on_dismiss=_cancel_step_up)
def step_up_dialog(pending: _Pending) -> None:
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
        outcome = accounts.check_step_up_code(session, actor(user), code, cipher())
    if not outcome.ok:
        st.error(outcome.error)
        return
    st.session_state[MFA_VERIFIED_AT] = outcome.verified_at
    _cancel_step_up()
    if _attempt(pending) == "done":
        st.rerun()
