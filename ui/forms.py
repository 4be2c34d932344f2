"""Forms: each field's error right under the field, and what was typed kept through an error
without keeping a secret in clear.

Every form does the same: `errors = FieldErrors()`, `errors.under("username")` after each
widget (in the widget's column), then `errors.show(found)` with what core's checks returned by
field (core.admin.validation for provider configs, core.accounts.account_field_errors for
accounts). The slots are made anew on every run, so an error the user has fixed is gone at
the next submit.

Widgets that keep what was typed are keyed and live in a form with clear_on_submit=False.
Secret ones (passwords, the setup token) are emptied by `seal_typed`, the submit button's
on_click, before the page runs: their text waits Fernet-sealed, and only until the page takes it
(`take_typed`: a password is typed again after an error) or, for what is worth keeping (a
pasted setup token), until the form succeeds (`typed`, then `forget`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from ui.feedback import plain
from ui.resources import cipher

_SEALED = "{}__sealed"  # where a secret widget's text waits, sealed


@dataclass(frozen=True)
class Sealed:
    """A secret (a password, a pasted key or token) kept encrypted while it waits."""

    token: str = field(repr=False)


def seal(secret: str) -> Sealed:
    return Sealed(cipher().encrypt(secret))


def unseal(sealed: Sealed) -> str:
    """The secret back, for the one call that needs it (never store the result)."""
    return cipher().decrypt(sealed.token)


class FieldErrors:
    """Under each field of a form, an empty slot its error is shown in after a submit."""

    def __init__(self) -> None:
        self._slots: dict[str, DeltaGenerator] = {}

    def under(self, field: str, where: DeltaGenerator | None = None) -> None:
        """Call right after drawing `field`'s widget, with the column it is in (if any)."""
        self._slots[field] = (where or st).empty()

    def show(self, errors: Mapping[str, str]) -> None:
        """Each message under its field, as plain text (messages may quote what was typed); a
        message for a field the form has no slot for is shown where this is called."""
        for name, message in errors.items():
            slot = self._slots.get(name)
            (slot or st).error(plain(message), icon=":material/error:")


def secret_box(label: str, key: str, where: DeltaGenerator | None = None, **kwargs: object) -> None:
    """A password box the server always draws empty: what is typed reaches the page only
    through `seal_typed` on submit. Its value is set to "" through Session State on every run,
    which makes the browser empty its box as well. (Emptying it once, in the submit's on_click,
    was not enough: that run may be cut short by st.rerun() before the browser hears of it, and
    the next run's widget, unchanged for the browser, kept the secret in its value attribute,
    in the page's HTML; seen under load in a browser test.)"""
    st.session_state[key] = ""
    (where or st).text_input(label, type="password", key=key, **kwargs)  # type: ignore[arg-type]


def seal_typed(*keys: str) -> None:
    """The on_click of a form's submit button: move what was typed into the secret widgets
    `keys` into sealed copies and empty the widgets, before the page runs, so no plaintext
    stays in session state after an error or while a step-up dialog waits. An empty widget
    keeps the copy sealed before it (a token pasted once is not asked for again)."""
    for key in keys:
        text = st.session_state.get(key) or ""
        if text:
            st.session_state[_SEALED.format(key)] = seal(text)
        st.session_state[key] = ""


def typed(key: str) -> Sealed | None:
    """What was typed into the secret widget `key` and kept sealed, or None."""
    return st.session_state.get(_SEALED.format(key))


def take_typed(key: str) -> str:
    """What was typed into the secret widget `key` ("" when nothing), no longer kept: for the
    one call that needs it (never store the result)."""
    sealed = st.session_state.pop(_SEALED.format(key), None)
    return unseal(sealed) if sealed is not None else ""


def forget(*keys: str) -> None:
    """Empty the form's widgets `keys` (and their sealed copies): after a success."""
    for key in keys:
        st.session_state.pop(key, None)
        st.session_state.pop(_SEALED.format(key), None)
