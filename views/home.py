"""Home: what the app does, the steps to follow, and the demo in one click."""

import streamlit as st

from mssl_core.project.ingest import demo_project
from mssl_core.project.store import StorageError
from views.access import current_user, require_unlocked, set_current_project

require_unlocked()
st.title("MSSL Label Assist")
st.markdown(
    """
Give a handful of labeled images and a large unlabeled batch; get the batch back
pseudo-labeled, with a confidence you can trust, and correct it quickly.

Under the hood, a model **meta-trained** to learn from a few examples adapts to your classes
and also learns from your **unlabeled** images.
"""
)
if st.button(
    "Try the demo",
    type="primary",
    icon=":material/play_arrow:",
    help="A project with 25 labeled and 300 unlabeled images of clothing, ready to pseudo-label",
):
    try:
        with st.spinner("Preparing the demo project…"):
            name = demo_project(current_user())
    except (StorageError, FileNotFoundError) as error:
        st.error(f"The demo project could not be prepared: {error}")
        st.stop()
    set_current_project(name)
    st.switch_page("views/pseudo_label.py")
st.markdown(
    """
**The steps** (left menu):
1. **Project & upload** — create a project, add a few labeled examples per class and the
   unlabeled batch.
2. **Pseudo-label** — one button; a few seconds for a few hundred images.
3. **Review** — the uncertain images first; accept, correct or skip (keyboard: A, 1–9, S, Z),
   or accept everything above a confidence threshold.
4. **Explore** — a map of all images; select a group to label it at once.
5. **Export** — CSV, Label Studio, or folders per class.
6. **Model** — what the model is and how well it does on classes it never saw.

Everything stays on this machine: images, labels and decisions are saved in the project's
database as you go, so you can close the browser and come back.
"""
)
st.page_link(
    "views/upload.py", label="Start with your own images: Project & upload", icon=":material/arrow_forward:"
)
