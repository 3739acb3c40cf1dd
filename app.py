"""MSSL Label Assist — Streamlit entry point: navigation over the pages in `views/`, or only a
log-in page while this session has not logged in (named users, or one configured password)."""

import logging

import streamlit as st

from mssl_core.engine.data.paths import ASSETS_DIR
from mssl_core.project.store import keep_files_private
from views.access import current_user, locked, log_out, login_required, md, password_prompt

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ICON = ASSETS_DIR / "icon.svg"

keep_files_private()
# The engine's warnings (unreadable files, a cache that could not be written) on the server console.
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
# An SVG file (inlined as a data: URI), not a Material icon name: those come from fonts.gstatic.com
st.set_page_config(page_title="MSSL Label Assist", page_icon=str(ICON), layout="wide")

if st.get_option("server.address") not in LOOPBACK and not login_required():
    st.error(
        "This app is reachable from other machines (server.address is not 127.0.0.1) but has no "
        "password. Add users (`python -m mssl_core users add NAME`) or set MSSL_PASSWORD (or "
        "`password` in .streamlit/secrets.toml), and restart."
    )
    st.stop()

if locked():  # the only page that exists until the password is given: no URL reaches another
    navigation = st.navigation([st.Page(password_prompt, title="Log in", icon=":material/lock:")])
else:
    navigation = st.navigation(
        [
            st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
            st.Page("views/upload.py", title="1 · Project & upload", icon=":material/upload:"),
            st.Page("views/pseudo_label.py", title="2 · Pseudo-label", icon=":material/auto_awesome:"),
            st.Page("views/review.py", title="3 · Review", icon=":material/fact_check:"),
            st.Page("views/explore.py", title="4 · Explore", icon=":material/scatter_plot:"),
            st.Page("views/export.py", title="5 · Export", icon=":material/download:"),
            st.Page("views/model.py", title="6 · Model", icon=":material/model_training:"),
        ]
    )
    if current_user() is not None:
        st.sidebar.caption(f"Logged in as {md(current_user())}")
    if login_required() and st.sidebar.button("Log out", icon=":material/logout:", key="log-out"):
        log_out()
        st.rerun()
navigation.run()
