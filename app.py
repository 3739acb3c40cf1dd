"""MSSL Label Assist — Streamlit entry point: navigation over the pages in `pages/`."""

import streamlit as st

st.set_page_config(page_title="MSSL Label Assist", page_icon="🏷️", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon="🏠", default=True),
        st.Page("pages/model.py", title="Model", icon="🧠"),
    ]
)
navigation.run()
