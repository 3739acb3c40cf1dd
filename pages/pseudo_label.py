"""Step 2 — Pseudo-label: pick the method in plain words, run it, see the result in seconds."""

import time

import streamlit as st
import torch

from mssl_core.checkpoints import available_models
from mssl_core.images import decode_image
from mssl_core.ingest import demo_accuracy
from mssl_core.labeling import choose_backbone, default_method
from mssl_core.methods import METHODS
from mssl_core.pseudo_label import pseudo_label_project, support_set
from pages.common import embedding_cache, load_model_for, require_project

st.title("Pseudo-label")
project = require_project()

shipped = {name.split("-", 1)[1] for name in available_models()}
best = default_method()
choices = [m for m in METHODS if m in shipped or not getattr(METHODS[m], "meta_trained", True)]
# The recommended method first, then the other meta-trained ones, baselines last.
choices.sort(key=lambda m: (m != best, not getattr(METHODS[m], "meta_trained", True), m))
saved = project.setting("method") or best
method = st.radio(
    "How should the model use your images?",
    choices,
    index=choices.index(saved) if saved in choices else 0,
    format_func=lambda m: (
        f"{m}{'  (recommended: best measured)' if m == best else ''} — {METHODS[m].description}"
    ),
)
backbone_choice = st.selectbox(
    "Image features",
    ["auto", "conv4", "mobilenetv2"],
    format_func={
        "auto": "Automatic (measured on your labeled examples)",
        "conv4": "Drawings and characters (small network trained here)",
        "mobilenetv2": "Photos and micrographs (ImageNet MobileNetV2)",
    }.get,
)

support = support_set(project, project.current_decisions())
classes = sorted({label for _, label in support})
if len(classes) < 2 or not project.images("unlabeled"):
    st.warning("Add labeled examples of at least two classes and some unlabeled images first.")
    st.stop()

if st.button("Pseudo-label", type="primary"):
    started = time.perf_counter()
    backbone = backbone_choice
    if backbone == "auto":
        images = [decode_image(image.path) for image, _ in support]
        labels = torch.tensor([classes.index(label) for _, label in support])
        backbone, reason = choose_backbone(images, labels, method)
        st.caption(reason)
    project.set_setting("method", method)
    project.set_setting("backbone", backbone)
    bar = st.progress(0.0, text="Embedding images (each image only once, then cached)…")
    result = pseudo_label_project(
        project,
        load_model_for(method, backbone),
        embedding_cache(),
        progress=lambda done: bar.progress(done, text=f"Embedding images… {done:.0%}"),
    )
    bar.empty()
    seconds = time.perf_counter() - started
    counts = {c: result.prediction.labels.count(c) for c in result.prediction.classes}
    st.success(f"Pseudo-labeled {len(result.images)} images in {seconds:.1f} s with {method}.")
    measured = demo_accuracy([i.name for i in result.images], result.prediction.labels)
    if measured:
        st.write(
            f"Demo images come with their true labels: **{measured[1]:.0%}** of these "
            f"{measured[0]} pseudo-labels are right (measured, not estimated)."
        )
    if result.prediction.task_temperature:
        st.caption("Confidence was calibrated on your own labeled examples (leave-one-out).")
    confident = (result.prediction.confidence >= 0.9).sum()
    st.write(f"{confident} of {len(result.images)} images are predicted with ≥ 90% confidence.")
    st.bar_chart(counts, x_label="class", y_label="images")
    st.page_link("pages/review.py", label="Next: review the pseudo-labels", icon=":material/arrow_forward:")
elif project.predictions():
    st.info(f"This project has {len(project.predictions())} pseudo-labels; run again to refresh them.")
    st.page_link("pages/review.py", label="Review them", icon=":material/arrow_forward:")
