"""The console's per-process resources (ui/resources.py), fresh for each test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from core import periodic
from core.usage import writer


@contextmanager
def fresh_console_resources() -> Iterator[None]:
    """Clear the console's cached settings, engine, cipher and usage writer before and after
    the test; the writer and the background rounds it started (alerts, retention) are
    stopped, so their threads do not outlive the test's database."""
    st.cache_resource.clear()
    before = set(writer._LIVE)
    running = set(periodic.RUNNING)
    try:
        yield
    finally:
        for started in set(periodic.RUNNING) - running:
            started.stop()
        for started in set(writer._LIVE) - before:
            started.close()
        st.cache_resource.clear()
