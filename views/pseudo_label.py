"""Step 2 — Pseudo-label: pick the method in plain words, run it, see the result in seconds."""

import json
import time
from collections import Counter
from dataclasses import asdict, replace

import streamlit as st

from mssl_core.engine.checkpoints import available_models
from mssl_core.engine.class_shares import describe_shares
from mssl_core.engine.methods import METHODS
from mssl_core.engine.model_cards import default_method
from mssl_core.labeling.adapt import FEATURE_SOURCES, choose_backbone
from mssl_core.project.ingest import demo_accuracy
from mssl_core.project.pseudo_label import project_task, pseudo_label_project
from views.access import md, require_unlocked
from views.common import embedding_cache, load_model_for, project_ssl, require_project, saved_or_reported

require_unlocked()
st.title("Pseudo-label")
project = require_project()

shipped = {name.split("-", 1)[1] for name in available_models()}
best = default_method()
choices = [m for m in METHODS if m in shipped or not METHODS[m].meta_trained]
# The recommended method first, then the other meta-trained ones, baselines last.
choices.sort(key=lambda m: (m != best, not METHODS[m].meta_trained, m))
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
    ["auto", *FEATURE_SOURCES[1:]],
    format_func={
        "auto": "Automatic: all of the below combined, each weighted by how it predicts your labeled examples",
        "imagenet": "General image features, centred on your images (ImageNet MobileNetV2, no head)",
        "conv4": "Drawings and characters (small network trained here)",
        "pixels": "Raw pixels, centred on your images",
        "mobilenetv2": "Photos, through a head meta-trained here (ImageNet MobileNetV2)",
    }.get,
)

saved_ssl = project_ssl(project)
with st.expander(f"More ways to learn from the unlabeled images (now: {saved_ssl.describe()})"):
    st.caption(
        "Optional extras on top of the method above. They can help when the unlabeled images are "
        "many and clean; check the measured accuracy on the Model page before relying on them."
    )
    self_training = st.toggle(
        "Self-training: confident predictions become extra examples, then the model adapts again",
        value=saved_ssl.pseudo_label_rounds > 0,
    )
    threshold = st.slider(
        "Confidence needed to be used as an extra example",
        0.5,
        0.99,
        saved_ssl.pseudo_label_threshold,
        0.01,
        disabled=not self_training,
    )
    rounds = st.number_input("Rounds", 1, 5, max(1, saved_ssl.pseudo_label_rounds), disabled=not self_training)
    entropy = st.toggle(
        "Prefer decisive answers on the unlabeled images (entropy minimisation)",
        value=saved_ssl.entropy_weight > 0,
    )
    consistency = st.toggle(
        "Answers must not change when an image is slightly perturbed (consistency)",
        value=saved_ssl.consistency_weight > 0,
    )
ssl = replace(
    saved_ssl,
    pseudo_label_rounds=int(rounds) if self_training else 0,
    pseudo_label_threshold=float(threshold),
    entropy_weight=(saved_ssl.entropy_weight or 0.1) if entropy else 0.0,
    consistency_weight=(saved_ssl.consistency_weight or 0.1) if consistency else 0.0,
)

task = project_task(project)
if not task.ready:
    st.warning("Add labeled examples of at least two classes and some unlabeled images first.")
    st.stop()
per_class = Counter(label for _, label in task.support)
st.caption(
    f"Project **{md(project.name)}**: {len(task.support)} labeled images in {len(task.classes)} classes "
    f"({', '.join(f'{md(c)} {per_class[c]}' for c in task.classes)}), {len(task.unlabeled)} images to label."
)

if st.button("Pseudo-label", type="primary"):
    started = time.perf_counter()
    backbone = backbone_choice
    if backbone == "auto":
        backbone, reason = choose_backbone()
        st.caption(reason)
    bar = st.progress(0.0, text="Embedding images (each image only once, then cached)…")
    with saved_or_reported():
        project.set_setting("method", method)
        project.set_setting("backbone", backbone)
        project.set_setting("ssl", json.dumps(asdict(ssl)))
        result = pseudo_label_project(
            project,
            load_model_for(method, backbone),
            embedding_cache(),
            progress=lambda done: bar.progress(done, text=f"Embedding images… {done:.0%}"),
            ssl=ssl,
        )
    bar.empty()
    seconds = time.perf_counter() - started
    counts = {c: result.prediction.labels.count(c) for c in result.prediction.classes}
    extras = "" if not ssl.active else f" (+ {ssl.describe()})"
    st.success(f"Pseudo-labeled {len(result.images)} images in {seconds:.1f} s with {method}{extras}.")
    measured = demo_accuracy([i.sha256 for i in result.images], result.prediction.labels)
    if measured:
        st.write(
            f"Demo images come with their true labels: **{measured[1]:.0%}** of these "
            f"{measured[0]} pseudo-labels are right (measured, not estimated)."
        )
    if result.prediction.confidence_checked:
        st.caption(
            "Confidence: calibrated on validation tasks of this shape, then adjusted on your own "
            "labeled examples (each predicted from the others)."
        )
    else:
        st.warning(
            "Confidence could not be checked on your own images: some class has a single labeled "
            "example, so it comes from validation tasks alone, and on images unlike those it can "
            "run high. Label a second example of every class to have it checked."
        )
    if result.prediction.batch_shares is not None:
        shares = describe_shares(result.prediction.classes, result.prediction.batch_shares)
        st.caption(shares[0].upper() + shares[1:] + ".")
    confident = (result.prediction.confidence >= 0.9).sum()
    st.write(f"{confident} of {len(result.images)} images are predicted with ≥ 90% confidence.")
    st.bar_chart(counts, x_label="class", y_label="images")
    st.page_link("views/review.py", label="Next: review the pseudo-labels", icon=":material/arrow_forward:")
elif project.predictions():
    st.info(f"This project has {len(project.predictions())} pseudo-labels; run again to refresh them.")
    st.page_link("views/review.py", label="Review them", icon=":material/arrow_forward:")
