"""Step 5 — Export: CSV, Label Studio JSON, or a class-folder zip (torchvision ImageFolder)."""

import streamlit as st

from mssl_core.project.export import (
    audit_trail_csv,
    pseudonymised,
    to_class_folders_zip,
    to_csv,
    to_label_studio,
)
from mssl_core.project.pseudo_label import export_rows
from views.access import require_unlocked
from views.common import download_button, require_project

require_unlocked()
st.title("Export")
project = require_project()

include = st.radio(
    "Which labels?",
    ["decided", "all"],
    format_func={
        "decided": "Only labels a person gave or confirmed (labeled, accepted, corrected)",
        "all": "Also the model's pseudo-labels for images nobody reviewed",
    }.get,
)
rows = export_rows(project, include_pseudo_labels=include == "all")
if st.checkbox(
    "Replace file names by pseudonyms (image-000001.png, …)",
    value=True,
    help="File names often carry a patient's name or record number. Images are always exported "
    "without their metadata (EXIF, comments, DICOM headers).",
):
    rows = pseudonymised(rows)
statuses = {}
for row in rows:
    statuses[row.status] = statuses.get(row.status, 0) + 1
st.write(f"**{len(rows)} images**: " + ", ".join(f"{n} {s}" for s, n in statuses.items()))

csv_tab, studio_tab, folders_tab, audit_tab = st.tabs(
    ["CSV", "Label Studio", "Class folders (zip)", "Audit trail"]
)
with csv_tab:
    csv_bytes = to_csv(rows) if rows else b""
    download_button("Download CSV", csv_bytes, f"{project.name}-labels.csv", "text/csv", key="csv")
with studio_tab:
    studio = to_label_studio(rows) if rows else b""
    download_button(
        "Download Label Studio JSON",
        studio,
        f"{project.name}-label-studio.json",
        "application/json",
        key="studio",
    )
with folders_tab:
    if st.button("Build zip", disabled=not rows):
        zipped = to_class_folders_zip(rows)
        download_button("Download zip", zipped, f"{project.name}-images.zip", "application/zip", key="zip")
with audit_tab:
    st.caption(
        "Every decision on this project: when (UTC), by whom (user and browser tab), on which image "
        "(original file names, never pseudonyms) and what. For your records, not for sharing."
    )
    trail = project.audit_trail()
    download_button(
        "Download audit trail (CSV)",
        audit_trail_csv(trail) if trail else b"",
        f"{project.name}-audit-trail.csv",
        "text/csv",
        key="audit",
    )
