"""What every page shares: the model and embedding cache (loaded once per process), and the
current project, whose name is also kept in the URL so a refresh resumes it."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextlib import closing, contextmanager
from pathlib import Path

import streamlit as st

from mssl_core.engine.checkpoints import Model
from mssl_core.engine.model_cards import default_method
from mssl_core.engine.ssl import DEFAULT_SSL, SSLOptions, options_from_dict
from mssl_core.labeling import label_issues
from mssl_core.labeling.adapt import FEATURE_SOURCES, model_for
from mssl_core.labeling.embedding_cache import CacheError, EmbeddingCache
from mssl_core.labeling.images import ImageError, thumbnail_data_uri
from mssl_core.project.pseudo_label import ProjectPrediction, pseudo_label_project
from mssl_core.project.store import DecisionConflict, LabelingProject, StorageError, data_dir, open_project
from views.access import current_user, md, set_current_project


@contextmanager
def saved_or_reported():
    """Around every write: if it cannot be saved (disk full, read-only folder), say so plainly
    and stop the page; nothing is confirmed that was not saved, and the saved state is intact."""
    try:
        yield
    except (StorageError, CacheError) as error:
        st.error(str(error))
        st.stop()


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
    backbone = project.setting("backbone") or FEATURE_SOURCES[0]
    return load_model_for(method, backbone)


def show_images(images: list[tuple[Path, str]], width: int, target=None) -> None:
    """Images with captions, inline in the page (`data:` URIs re-encoded from the pixels), so
    that no image is served at a URL a client without this session could fetch, and no
    metadata (EXIF, DICOM headers) reaches the browser."""
    tiles = []
    for path, caption in images:
        try:
            source = _inline_image(str(path), width)
        except ImageError:
            continue
        tiles.append(
            f'<figure style="margin:0 8px 8px 0;display:inline-block;width:{width}px">'
            f'<img src="{source}" alt="{html.escape(caption)}" style="width:{width}px;height:{width}px;'
            f'object-fit:contain"><figcaption style="font-size:12px;overflow-wrap:anywhere">'
            f"{html.escape(caption)}</figcaption></figure>"
        )
    (target or st).html("".join(tiles))


@st.cache_data(max_entries=5000, show_spinner=False)
def _inline_image(path: str, side: int) -> str:
    return thumbnail_data_uri(Path(path), side)


def project_ssl(project: LabelingProject) -> SSLOptions:
    """The semi-supervised options chosen for the project (default until someone changes them)."""
    saved = project.setting("ssl")
    return options_from_dict(json.loads(saved)) if saved else DEFAULT_SSL


def current_project_name() -> str | None:
    """From this session, or from the URL after a refresh (page switches drop the URL's query)."""
    name = st.session_state.get("project") or st.query_params.get("project")
    if name:
        set_current_project(name)
    return name


def browser_session() -> str:
    """A short id of this browser session (tab), recorded with each decision in the audit trail."""
    if "browser_session" not in st.session_state:
        st.session_state["browser_session"] = uuid.uuid4().hex[:8]
    return st.session_state["browser_session"]


def forget_current_project() -> None:
    st.session_state.pop("project", None)
    st.query_params.pop("project", None)


def close_project(project: LabelingProject) -> None:
    """Close this session's connection to a project (before deleting it)."""
    with _latest_lock:  # a new project of the same name must not inherit its predictions
        _latest.pop((str(data_dir()), project.name), None)
    project.close()
    st.session_state.pop("connection", None)


def session_project(name: str) -> LabelingProject:
    """This browser session's own connection to the project. Never one shared by sessions: a
    transaction one of them rolls back must not take another's committed decision with it."""
    key = (str(data_dir()), name, current_user())
    held = st.session_state.get("connection")
    if held is None or held[0] != key:
        if held is not None:
            held[1].close()
        st.session_state["connection"] = (key, open_project(name, create=False, user=current_user()))
    return st.session_state["connection"][1]


def require_project() -> LabelingProject:
    """The open project, or a pointer to the Project page and a stop."""
    name = current_project_name()
    if name:
        try:
            return session_project(name)
        except FileNotFoundError:
            st.warning(f"Project '{md(name)}' no longer exists.")
        except ValueError as error:  # a name from the URL that no project can have
            st.warning(md(str(error)))
            forget_current_project()
    st.info("Choose or create a project first.")
    st.page_link("views/upload.py", label="Go to Project & upload", icon=":material/upload:")
    st.stop()


# The latest predictions per project (any session's), and the states being re-adapted in the
# background: a decision shows the next image at once, from predictions one or two decisions
# old, while the batch re-adapts to it (seconds on large batches on 2 cores); the next page run
# takes the fresh ones. Decisions themselves are always saved before the page goes on.
_latest: OrderedDict[tuple[str, str], tuple[tuple, ProjectPrediction]] = OrderedDict()
LATEST_KEPT = 4  # projects: each holds its batch's embeddings (about 120 MB at 10,000 images)
_adapting: set[tuple[str, str]] = set()
_latest_lock = threading.Lock()


def current_predictions(project: LabelingProject) -> ProjectPrediction:
    """Predictions re-adapted to every decision so far (cached embeddings: only the method
    runs), or a pointer to the Pseudo-label page if the batch has never been pseudo-labeled.
    After new decisions alone, the latest predictions with the current decisions, while a
    background thread re-adapts (see above)."""
    if not project.has_predictions():
        st.info("Pseudo-label the batch first.")
        st.page_link("views/pseudo_label.py", label="Pseudo-label", icon=":material/arrow_back:")
        st.stop()
    key, state = (str(data_dir()), project.name), project.version()
    with _latest_lock:
        latest = _latest.get(key)
        if latest:
            _latest.move_to_end(key)
    if latest and latest[0] == state:
        return latest[1]
    if latest and latest[0][1] == state[1]:  # only decisions are new
        _adapt_in_background(project, key)
        return dataclasses.replace(latest[1], decisions=project.current_decisions())
    with saved_or_reported():
        result = pseudo_label_project(
            project, project_model(project), embedding_cache(), ssl=project_ssl(project)
        )
    _keep_latest(key, state, result)
    return result


def _keep_latest(key: tuple[str, str], state: tuple, result: ProjectPrediction) -> None:
    with _latest_lock:
        _latest[key] = (state, result)
        _latest.move_to_end(key)
        while len(_latest) > LATEST_KEPT:
            _latest.popitem(last=False)


def _adapt_in_background(project: LabelingProject, key: tuple[str, str]) -> None:
    """Re-adapt the project to its current state in a thread of its own (with its own database
    connection), then again while decisions keep arriving; one thread per project at a time."""
    with _latest_lock:
        if key in _adapting:
            return
        _adapting.add(key)
    name, user = project.name, project.user
    model, cache, ssl = project_model(project), embedding_cache(), project_ssl(project)

    def run() -> None:
        try:
            with closing(open_project(name, create=False, user=user)) as own:
                while True:
                    state = own.version()
                    _keep_latest(key, state, pseudo_label_project(own, model, cache, ssl=ssl))
                    if own.version() == state:
                        break
        except Exception:  # the next page run re-adapts in the foreground and reports it
            with _latest_lock:
                _latest.pop(key, None)
        finally:
            with _latest_lock:
                _adapting.discard(key)

    threading.Thread(target=run, name=f"re-adapt {name}", daemon=True).start()


def labels_to_check(project: LabelingProject, result: ProjectPrediction, session: str) -> None:
    """Labeled examples whose held-out prediction disagrees with their label
    (`label_issues.py`), each with a one-click fix: relabel as the likelier class, or keep."""
    callback_notice()  # a relabel that could not be saved (the Review page shows it earlier)
    if not result.suspicious:
        return
    with st.container(border=True):
        count, likely = len(result.suspicious), sum(check.likely for _, check in result.suspicious)
        st.write(
            f"**{count} labeled example{'s' if count != 1 else ''} to check.** Predicted from your other "
            "labeled images, these look like another class: one wrong example moves a whole class."
        )
        accuracy = result.held_out_accuracy
        if accuracy is not None and accuracy < label_issues.WEAK_CHECK_BELOW and likely < count:
            which = "those not marked likely mislabeled" if likely else "most of these"
            st.caption(
                f"Weak evidence here: predicted from the others, only {accuracy:.0%} of your labeled "
                f"examples come out as their own class, so {which} may be right and just hard to tell "
                "apart. Keep the ones you are sure of."
            )
        for image, check in result.suspicious:
            picture, words = st.columns([1, 5])
            show_images([(image.path, "")], 72, picture)
            with words:
                st.write(
                    ("**Likely mislabeled.** " if check.likely else "")
                    + f"{md(image.name)}: labeled **{md(image.label)}**, looks like **{md(check.likelier)}** "
                    f"({check.probability:.0%} when predicted from the others)"
                )
                with st.container(horizontal=True):
                    for text, label, kind in (
                        (f"Relabel as {md(check.likelier)}", check.likelier, "primary"),
                        (f"Keep {md(image.label)}", image.label, "secondary"),
                    ):
                        st.button(
                            text,
                            key=f"{'relabel' if label == check.likelier else 'keep'}-{image.id}",
                            type=kind,
                            on_click=_relabel,
                            args=(project, image, label, session),
                        )


def _relabel(project: LabelingProject, image, label: str, session: str) -> None:
    if saved_in_callback(lambda: project.relabel(image.id, label, session)):
        st.toast(f"Saved: {md(image.name)} is labeled {md(label)}.")


def saved_in_callback(save: Callable[[], None]) -> bool:
    """`saved_or_reported` for button callbacks, which run before the page and cannot stop it:
    whether `save` was saved; if not, why is shown at the top of the page (`callback_notice`)."""
    try:
        save()
    except DecisionConflict as conflict:
        st.session_state["callback_notice"] = ("warning", str(conflict))
    except (StorageError, CacheError) as error:
        st.session_state["callback_notice"] = ("error", str(error))
    else:
        return True
    return False


def callback_notice() -> None:
    """What a button callback could not save (see `saved_in_callback`), once."""
    if notice := st.session_state.pop("callback_notice", None):
        kind, message = notice
        (st.warning if kind == "warning" else st.error)(md(message))


# Plotly hover labels cannot show images, so this component listens to the map's own hover
# events in the page and shows the hovered image (points carry image ids in `customdata`).
_HOVER_JS = """
export default function(component) {
  window.msslThumbnails = component.data.thumbnails;
  let tip = document.getElementById("mssl-hover-thumbnail");
  if (!tip) {
    tip = document.createElement("div");
    tip.id = "mssl-hover-thumbnail";
    tip.style.cssText = "position:fixed;z-index:100000;display:none;pointer-events:none;" +
      "background:white;border:1px solid #999;border-radius:4px;padding:4px;" +
      "box-shadow:0 2px 8px rgba(0,0,0,.3);font:12px sans-serif;color:#222";
    document.body.appendChild(tip);
  }
  const attach = () => document.querySelectorAll(".js-plotly-plot").forEach((chart) => {
    if (chart.msslHover || typeof chart.on !== "function") return;
    chart.msslHover = true;
    chart.on("plotly_hover", (event) => {
      const point = event.points[0];
      const id = Array.isArray(point.customdata) ? point.customdata[0] : point.customdata;
      const shown = (window.msslThumbnails || {})[id];
      if (!shown) return;
      tip.innerHTML = "";
      const img = document.createElement("img");
      img.src = shown.src;
      img.alt = shown.name;
      img.style.cssText = "display:block;width:96px;height:96px;object-fit:contain";
      const caption = document.createElement("div");
      caption.textContent = shown.name;
      tip.append(img, caption);
      // above and to the left of the pointer: Plotly's own label opens to the right
      tip.style.left = Math.max(0, event.event.clientX - 126) + "px";
      tip.style.top = Math.max(0, event.event.clientY - 150) + "px";
      tip.style.display = "block";
    });
    chart.on("plotly_unhover", () => { tip.style.display = "none"; });
  });
  attach();
  const timer = setInterval(attach, 500);
  return () => clearInterval(timer);
}
"""
_hover_component = st.components.v2.component("mssl_hover_thumbnails", js=_HOVER_JS, isolate_styles=False)


# Files to download travel inside the page (over the session's own connection) and are saved
# from a Blob in the browser: st.download_button would serve them at a /media/ URL that any
# client holding the URL can fetch, logged in or not.
_DOWNLOAD_JS = """
export default function({ parentElement, data }) {
  const button = parentElement.querySelector("button");
  button.textContent = data.label;
  button.disabled = data.content === "";
  button.onclick = () => {
    const bytes = Uint8Array.from(atob(data.content), (c) => c.charCodeAt(0));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([bytes], { type: data.mime }));
    link.download = data.name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  };
}
"""
_DOWNLOAD_CSS = """
button { font: inherit; padding: 0.25rem 0.75rem; border-radius: 0.5rem; cursor: pointer;
  border: 1px solid rgba(49, 51, 63, 0.2); background: white; color: rgb(49, 51, 63); min-height: 2.5rem; }
button:hover { border-color: rgb(255, 75, 75); color: rgb(255, 75, 75); }
button:disabled { cursor: not-allowed; opacity: 0.5; }
"""
_download_component = st.components.v2.component(
    "mssl_download", html="<button type='button'></button>", css=_DOWNLOAD_CSS, js=_DOWNLOAD_JS
)


def download_button(label: str, content: bytes, file_name: str, mime: str, key: str) -> None:
    """A button that saves `content` as `file_name`, never served at a URL (see above)."""
    encoded = base64.b64encode(content).decode("ascii")
    _download_component(data={"label": label, "content": encoded, "name": file_name, "mime": mime}, key=key)


def hover_thumbnails(thumbnails: dict[int, dict[str, str]]) -> None:
    """Show the image under the mouse on every Plotly chart of the page: {image id: {src, name}}."""
    _hover_component(data={"thumbnails": thumbnails}, key="hover-thumbnails")


@st.cache_data(show_spinner="Making thumbnails…", max_entries=8)
def thumbnails(images: list[tuple[int, str, str]]) -> dict[int, dict[str, str]]:
    """{id: {src: data URI, name}} for (id, path, name) triples; unreadable images are left out."""
    shown = {}
    for image_id, path, name in images:
        try:
            shown[image_id] = {"src": thumbnail_data_uri(Path(path)), "name": name}
        except ImageError:
            continue
    return shown
