"""AI Provider Console: Streamlit entry point.

Thin by design: page config, the shared engine, and (for now) a home page that says whether the
database is ready. Login, roles and st.navigation arrive with the console-security work.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from core.config import Settings
from core.db import make_engine, schema_status

st.set_page_config(page_title="AI Provider Console", page_icon=":material/hub:", layout="wide")


@st.cache_resource
def settings() -> Settings:
    return Settings.from_env()


@st.cache_resource
def engine() -> Engine:
    return make_engine(settings())


st.title("AI Provider Console")
st.caption("Route tasks to Gemini, OpenAI or Claude, keep keys encrypted, cap and see spending.")

url = make_url(settings().database_url)
status = schema_status(engine())
where = url.database if url.get_backend_name() == "sqlite" else url.render_as_string(True)
if status.up_to_date:
    st.success(f"Database ready: {url.get_backend_name()} `{where}`, schema {status.head}.")
else:
    st.error(
        f"The database schema is at {status.current or 'nothing'} but this version needs "
        f"{status.head}. Run `python -m core migrate` (or `make run`) and reload."
    )
