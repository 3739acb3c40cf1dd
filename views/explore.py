"""Step 4 — Explore: a 2-D map of the images; hover shows an image, a click shows it large, and a
lasso or box selection shows a group and gives it a class in one go. Confidence histogram and
counts per class beside it."""

import html

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from mssl_core.project.projection import project_2d
from views.access import md, require_unlocked
from views.common import (
    browser_session,
    current_predictions,
    hover_thumbnails,
    require_project,
    saved_or_reported,
    show_images,
    thumbnails,
)

HOVER_THUMBNAILS_UP_TO = 3000  # thumbnails are made once per batch; beyond this, click instead

require_unlocked()
st.title("Explore")
project = require_project()
result = current_predictions(project)
prediction = result.prediction


@st.cache_data(show_spinner="Laying out the map…")
def layout(embeddings: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    return project_2d(embeddings, method)


method = st.radio("Map", ["auto", "pca", "tsne"], horizontal=True, format_func=str.upper)
points = np.concatenate([result.support_embeddings, prediction.embeddings])
coordinates, used = layout(points, method)
support_count = len(result.support_embeddings)
frame = pd.DataFrame(
    {
        "x": coordinates[support_count:, 0],
        "y": coordinates[support_count:, 1],
        "label": [
            (result.decisions.get(i.id, ("", None))[1] or lbl)
            for i, lbl in zip(result.images, prediction.labels, strict=True)
        ],
        "confidence": prediction.confidence,
        "status": [result.status(i) for i in result.images],
        "file": [i.name for i in result.images],
        "id": [i.id for i in result.images],
        "marker size": np.clip(prediction.confidence, 0.2, 1) * 12,
    }
)
# Plotly renders tags in its labels (<a href> too): user strings go in escaped
shown = frame.assign(label=frame["label"].map(html.escape), file=frame["file"].map(html.escape))
figure = px.scatter(
    shown,
    x="x",
    y="y",
    color="label",
    symbol="status",
    size="marker size",
    custom_data=["id"],
    hover_data={
        "file": True,
        "confidence": ":.0%",
        "status": True,
        "x": False,
        "y": False,
        "marker size": False,
    },
    title=f"{len(frame)} unlabeled images ({used.upper()}); larger = more confident",
)
figure.update_layout(dragmode="lasso", height=560)
left, right = st.columns([3, 1])
with left:
    event = st.plotly_chart(
        figure, on_select="rerun", selection_mode=("points", "lasso", "box"), key="map", width="stretch"
    )
if len(result.images) <= HOVER_THUMBNAILS_UP_TO:
    hover_thumbnails(thumbnails([(i.id, str(i.path), i.name) for i in result.images]))
else:
    st.caption(f"Hovering shows images for batches of up to {HOVER_THUMBNAILS_UP_TO:,}; click a point instead.")
with right:
    st.plotly_chart(
        px.histogram(frame, x="confidence", nbins=20, title="Confidence", height=260), width="stretch"
    )
    counts = frame["label"].value_counts().rename_axis("class").reset_index(name="images")
    # the count first: a long class name would push it out of this narrow column
    st.dataframe(counts, hide_index=True, column_order=("images", "class"))

selected = [int(p["customdata"][0]) for p in event.selection.points] if event else []
if selected:
    st.write(f"**{len(selected)} images selected**")
    by_id = {i.id: i for i in result.images}
    width = 160 if len(selected) == 1 else 56  # one clicked point: show it large
    show_images([(by_id[i].path, by_id[i].name) for i in selected[:48]], width)
    label = st.selectbox("Give them the class", prediction.classes, format_func=md)
    if st.button(f"Assign '{md(label)}' to {len(selected)} images", type="primary"):
        predicted = dict(zip(frame["id"], prediction.labels, strict=True))
        with saved_or_reported():
            project.decide_many(
                dict.fromkeys(selected, label), predicted, session=f"explore {browser_session()}"
            )
        st.toast(f"Saved {len(selected)} labels.")
        st.rerun()
