"""Step 1 — Project & upload: create or reopen a project, add labeled and unlabeled images."""

from functools import partial

import streamlit as st

from mssl_core.integrations.label_studio import label_studio_labels
from mssl_core.labeling.images import ARCHIVE_LIMITS, read_label_csv
from mssl_core.project.ingest import class_counts, ingest_uploads, load_demo
from mssl_core.project.store import create_project, delete_project, list_projects, members, set_members, slugify
from mssl_core.project.users import list_users
from views.access import current_user, md, require_unlocked, set_current_project
from views.common import (
    browser_session,
    close_project,
    current_predictions,
    current_project_name,
    embedding_cache,
    forget_current_project,
    labels_to_check,
    require_project,
    saved_or_reported,
    show_images,
)

require_unlocked()
st.title("Project & upload")

projects = list_projects(current_user())
current = current_project_name()
left, right = st.columns(2)
with left:
    if projects:
        index = projects.index(current) if current in projects else None
        chosen = st.selectbox("Open a project", projects, index=index, placeholder="Choose…")
        if chosen and chosen != current:
            set_current_project(chosen)
            st.rerun()
with right:
    with st.form("new_project", clear_on_submit=True, border=False):
        new_name = st.text_input("…or create a new one", placeholder="e.g. skin-lesions-pilot")
        if st.form_submit_button("Create project") and new_name:
            try:
                create_project(new_name, owner=current_user()).close()
                set_current_project(slugify(new_name))
                st.rerun()
            except ValueError as error:
                st.error(str(error))

if not current:
    st.stop()
project = require_project()
st.subheader(f"Project: {md(project.name)}")


def show_report(title: str, report) -> None:
    st.write(f"**{title}:** {report.added} added")
    for name in report.duplicates:
        st.caption(f"Duplicate, counted once: {md(name)}")
    if report.problems:
        st.error(
            "Not added:\n" + "\n".join(f"- **{md(name)}**: {md(reason)}" for name, reason in report.problems)
        )


if st.button("Load demo data", help="Five kinds of clothing: 5 labeled examples each, 300 unlabeled"):
    with st.spinner("Adding demo images…"), saved_or_reported():
        labeled, unlabeled = load_demo(project)
    show_report("Labeled", labeled)
    show_report("Unlabeled", unlabeled)

# Streamlit refuses a larger file before it reaches us; the unpacked limit is ours (zip bombs).
UPLOAD_LIMITS = (
    f"Each file or zip can be up to {st.get_option('server.maxUploadSize'):,} MB, and a zip can hold "
    f"up to {ARCHIVE_LIMITS['total_bytes'] / 1024**3:g} GB once unpacked."
)


def csv_file_labels(content: bytes, _unpacked: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    return read_label_csv(content)


with st.expander("Add labeled examples", expanded=not class_counts(project)):
    st.caption(
        "A zip with one folder per class, or image files plus a CSV (`file,label`) or a Label Studio "
        f"export (JSON, one choice per task), or image files and a class name typed below. {UPLOAD_LIMITS}"
    )
    labeled_files = st.file_uploader(
        "Labeled images (files or zip)", accept_multiple_files=True, key="labeled_upload"
    )
    labels_csv = st.file_uploader(
        "Labels: CSV or Label Studio JSON export (optional)", type=["csv", "json"], key="labels_csv"
    )
    typed_class = st.text_input("Class of files without a folder or CSV label (optional)")
    if st.button("Add labeled images", disabled=not labeled_files):
        labels_from = None
        if labels_csv:  # a Label Studio export is matched to the unpacked file names
            read = label_studio_labels if labels_csv.name.lower().endswith(".json") else csv_file_labels
            labels_from = partial(read, labels_csv.getvalue())
        uploads = [(f.name, f) for f in labeled_files]
        with saved_or_reported():
            report = ingest_uploads(project, uploads, "labeled", labels_from, typed_class.strip() or None)
        show_report("Labeled", report)

with st.expander("Add unlabeled images", expanded=not project.images("unlabeled")):
    st.caption(f"Many files or a zip (thousands of images). {UPLOAD_LIMITS} Images stay on this machine.")
    unlabeled_files = st.file_uploader(
        "Unlabeled images (files or zip)", accept_multiple_files=True, key="unlabeled_upload"
    )
    if st.button("Add unlabeled images", disabled=not unlabeled_files):
        with saved_or_reported():
            report = ingest_uploads(project, [(f.name, f) for f in unlabeled_files], "unlabeled")
        show_report("Unlabeled", report)

counts = class_counts(project)
unlabeled_images = project.images("unlabeled")
st.metric("Unlabeled images", len(unlabeled_images))
if counts:
    st.write("**Labeled examples per class**")
    st.dataframe([{"class": label, "images": n} for label, n in counts.items()], hide_index=False)
    for label in counts:
        examples = [i for i in project.images("labeled") if i.label == label][:8]
        st.caption(md(label))
        show_images([(i.path, "") for i in examples], 64)
if len(counts) >= 2 and project.predictions():  # the check runs with the batch's adaptation
    labels_to_check(project, current_predictions(project), f"upload {browser_session()}")
if len(counts) == 1:
    st.warning("Add a second class: telling classes apart needs at least two.")
if len(counts) >= 2 and unlabeled_images:
    st.page_link("views/pseudo_label.py", label="Next: pseudo-label the batch", icon=":material/arrow_forward:")

if current_user() is not None:
    with st.expander("Who can open this project"):
        shared = members(project.name)
        st.caption(
            "Only the people chosen here see this project."
            if shared
            else "Every user can open this project (it was made before there were named users)."
        )
        others = [user for user in list_users() if user != current_user()]
        chosen = st.multiselect(
            "Share with", others, default=[u for u in shared if u in others], format_func=md
        )
        if st.button("Save who can open it"):
            with saved_or_reported():
                set_members(project.name, [current_user(), *chosen])
            st.toast(f"Saved: {len(chosen) + 1} people can open {md(project.name)}.")

with st.expander("Delete this project"):
    st.caption(
        "Removes the project's images, labels, decisions and predictions from this machine, and "
        "the cached embeddings of images no other project uses. This cannot be undone."
    )
    sure = st.checkbox(f"Yes, delete '{md(project.name)}' and everything in it")
    if st.button("Delete project", type="secondary", disabled=not sure):
        with saved_or_reported():
            close_project(project)
            delete_project(project.name, embeddings=embedding_cache())
        forget_current_project()
        st.toast(f"Deleted project {md(project.name)}.")
        st.rerun()
