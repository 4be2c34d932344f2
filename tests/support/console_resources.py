"""The console's per-process resources (ui/resources.py), fresh for each test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from core.alerts import watcher as alert_watcher
from core.usage import writer


@contextmanager
def fresh_console_resources() -> Iterator[None]:
    """Clear the console's cached settings, engine, cipher and usage writer before and after
    the test; the writer and alert watcher it started are stopped, so their threads do not
    outlive the test's database."""
    st.cache_resource.clear()
    before = set(writer._LIVE)
    watching = set(alert_watcher.RUNNING)
    try:
        yield
    finally:
        for started in set(alert_watcher.RUNNING) - watching:
            started.stop()
        for started in set(writer._LIVE) - before:
            started.close()
        st.cache_resource.clear()
