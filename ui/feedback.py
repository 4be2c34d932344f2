"""What the console tells people: messages that survive a rerun, provider text shown as plain
text (never Markdown), compact numbers."""

from __future__ import annotations

import re

import streamlit as st

FLASH = "flash"


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
