"""MSSL Label Assist — Streamlit entry point: navigation over the pages in `pages/`, or only a
password prompt while a configured password has not been given in this session."""

import streamlit as st

from pages.common import locked, password_prompt

st.set_page_config(page_title="MSSL Label Assist", page_icon=":material/label:", layout="wide")

if locked():  # the only page that exists until the password is given: no URL reaches another
    navigation = st.navigation([st.Page(password_prompt, title="Log in", icon=":material/lock:")])
else:
    navigation = st.navigation(
        [
            st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
            st.Page("pages/upload.py", title="1 · Project & upload", icon=":material/upload:"),
            st.Page("pages/pseudo_label.py", title="2 · Pseudo-label", icon=":material/auto_awesome:"),
            st.Page("pages/review.py", title="3 · Review", icon=":material/fact_check:"),
            st.Page("pages/explore.py", title="4 · Explore", icon=":material/scatter_plot:"),
            st.Page("pages/export.py", title="5 · Export", icon=":material/download:"),
            st.Page("pages/model.py", title="6 · Model", icon=":material/model_training:"),
        ]
    )
navigation.run()
