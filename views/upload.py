"""Step 1 — Project & upload: create or reopen a project, add labeled and unlabeled images."""

import streamlit as st

from mssl_core.images import expand_uploads, read_label_csv
from mssl_core.ingest import class_counts, ingest, load_demo
from mssl_core.label_studio import label_studio_labels
from mssl_core.store import create_project, delete_project, list_projects, slugify
from views.common import (
    close_project,
    current_project_name,
    embedding_cache,
    forget_current_project,
    md,
    require_project,
    require_unlocked,
    saved_or_reported,
    set_current_project,
    show_images,
)

require_unlocked()
st.title("Project & upload")

projects = list_projects()
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
                create_project(new_name).close()
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

with st.expander("Add labeled examples", expanded=not class_counts(project)):
    st.caption(
        "A zip with one folder per class, or image files plus a CSV (`file,label`) or a Label Studio "
        "export (JSON, one choice per task), or image files and a class name typed below."
    )
    labeled_files = st.file_uploader(
        "Labeled images (files or zip)", accept_multiple_files=True, key="labeled_upload"
    )
    labels_csv = st.file_uploader(
        "Labels: CSV or Label Studio JSON export (optional)", type=["csv", "json"], key="labels_csv"
    )
    typed_class = st.text_input("Class of files without a folder or CSV label (optional)")
    if st.button("Add labeled images", disabled=not labeled_files):
        files, problems = expand_uploads([(f.name, f.getvalue()) for f in labeled_files])
        if labels_csv and labels_csv.name.lower().endswith(".json"):
            csv_labels, csv_problems = label_studio_labels(labels_csv.getvalue(), [f.name for f in files])
        else:
            csv_labels, csv_problems = read_label_csv(labels_csv.getvalue()) if labels_csv else ({}, [])
        with saved_or_reported():
            report = ingest(project, files, "labeled", csv_labels, typed_class.strip() or None)
        report.problems = problems + csv_problems + report.problems
        show_report("Labeled", report)

with st.expander("Add unlabeled images", expanded=not project.images("unlabeled")):
    st.caption(
        f"Many files or a zip (thousands of images), up to {st.get_option('server.maxUploadSize'):,} MB "
        "per upload. Images stay on this machine."
    )
    unlabeled_files = st.file_uploader(
        "Unlabeled images (files or zip)", accept_multiple_files=True, key="unlabeled_upload"
    )
    if st.button("Add unlabeled images", disabled=not unlabeled_files):
        files, problems = expand_uploads([(f.name, f.getvalue()) for f in unlabeled_files])
        with saved_or_reported():
            report = ingest(project, files, "unlabeled")
        report.problems = problems + report.problems
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
if len(counts) == 1:
    st.warning("Add a second class: telling classes apart needs at least two.")
if len(counts) >= 2 and unlabeled_images:
    st.page_link("views/pseudo_label.py", label="Next: pseudo-label the batch", icon=":material/arrow_forward:")

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
