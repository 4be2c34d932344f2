"""The sidebar's page links, drawn by the console itself.

Streamlit's own sidebar navigation is off (client.showSidebarNavigation = false in
.streamlit/config.toml): before any session has run app.py, Streamlit lists the raw file names
of pages/ to whoever comes first, signed in or not. app.py hands the list it gives
st.navigation to page_links, so a page added there gets its link here.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st
from streamlit.navigation.page import StreamlitPage


def page_links(pages: Sequence[StreamlitPage]) -> None:
    """A sidebar link for each listed page, in order (unlisted, visibility="hidden" pages, such
    as a role's refusals under another page's address, get none)."""
    with st.sidebar:
        for page in pages:
            if page.visibility != "hidden":
                st.page_link(page)
