"""What every page shares: the model and embedding cache (loaded once per process), and the
current project, whose name is also kept in the URL so a refresh resumes it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mssl_core.checkpoints import Model
from mssl_core.embedding_cache import EmbeddingCache
from mssl_core.labeling import default_method, model_for
from mssl_core.pseudo_label import ProjectPrediction, pseudo_label_project
from mssl_core.store import LabelingProject, data_dir, open_project


def embedding_cache() -> EmbeddingCache:
    return _embedding_cache(str(data_dir()))


@st.cache_resource
def _embedding_cache(folder: str) -> EmbeddingCache:
    return EmbeddingCache(Path(folder) / "embeddings.sqlite")


@st.cache_resource
def load_model_for(method: str, backbone: str) -> Model:
    return model_for(method, backbone)


def project_model(project: LabelingProject) -> Model:
    """The model the project uses: its chosen method and backbone (defaults: best measured)."""
    method = project.setting("method") or default_method()
    backbone = project.setting("backbone") or "mobilenetv2"
    return load_model_for(method, backbone)


def current_project_name() -> str | None:
    """From this session, or from the URL after a refresh (page switches drop the URL's query)."""
    name = st.session_state.get("project") or st.query_params.get("project")
    if name:
        set_current_project(name)
    return name


def set_current_project(name: str) -> None:
    st.session_state["project"] = name
    st.query_params["project"] = name


@st.cache_resource
def _open(folder: str, name: str) -> LabelingProject:
    """One connection per project per process; keyed by the data folder too."""
    return open_project(name, create=False)


def require_project() -> LabelingProject:
    """The open project, or a pointer to the Project page and a stop."""
    name = current_project_name()
    if name:
        try:
            return _open(str(data_dir()), name)
        except FileNotFoundError:
            st.warning(f"Project '{name}' no longer exists.")
    st.info("Choose or create a project first.")
    st.page_link("pages/upload.py", label="Go to Project & upload", icon=":material/upload:")
    st.stop()


def current_predictions(project: LabelingProject) -> ProjectPrediction:
    """Re-adapt to every decision so far (cached embeddings: only the method runs), or point
    to the Pseudo-label page if the batch has never been pseudo-labeled."""
    if not project.predictions():
        st.info("Pseudo-label the batch first.")
        st.page_link("pages/pseudo_label.py", label="Pseudo-label", icon=":material/arrow_back:")
        st.stop()
    return pseudo_label_project(project, project_model(project), embedding_cache())
