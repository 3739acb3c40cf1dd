"""Step 3 — Review: the images that most need a human first; accept, correct or skip each,
or accept everything above a confidence threshold. Every decision is saved before the page
says so, and the rest of the batch re-adapts to it at once."""

import streamlit as st

from mssl_core.review import review_order, threshold_summary
from pages.common import current_predictions, require_project

PAGE_SIZE = 12
SESSION = "review"

st.title("Review")
project = require_project()
result = current_predictions(project)
prediction, decisions = result.prediction, result.decisions
pending = [i for i, image in enumerate(result.images) if image.id not in decisions]
done = len(result.images) - len(pending)
st.progress(done / max(len(result.images), 1), text=f"{done} of {len(result.images)} reviewed")

with st.container(border=True):
    st.write("**Accept all above a threshold**")
    threshold = st.slider("Confidence threshold", 0.5, 1.0, 0.95, 0.01)
    pending_confidence = prediction.confidence[pending]
    count, precision = threshold_summary(pending_confidence, threshold)
    source = (
        "confidence calibrated on your labeled examples"
        if prediction.task_temperature
        else "confidence calibrated on validation tasks"
    )
    expected = f", expected precision {precision:.1%} ({source})" if count else ""
    st.write(f"Accepts **{count}** images{expected}.")
    if st.button(f"Accept {count} images", disabled=count == 0):
        for index in pending:
            if prediction.confidence[index] >= threshold:
                project.decide(result.images[index].id, "accept", prediction.labels[index], session=SESSION)
        st.toast(f"Saved {count} accepted labels.")
        st.rerun()

order = review_order(
    prediction.probabilities[pending], prediction.embeddings[pending], result.support_embeddings
)
queue = [pending[i] for i in order[:PAGE_SIZE]]
if not queue:
    st.success("Every image has been reviewed.")
    st.page_link("pages/export.py", label="Export the labels", icon=":material/arrow_forward:")
columns = st.columns(4)
for slot, index in enumerate(queue):
    image = result.images[index]
    label, confidence = prediction.labels[index], prediction.confidence[index]
    with columns[slot % 4].container(border=True):
        st.image(str(image.path), width=112)
        st.caption(f"{image.name}")
        st.write(f"**{label}** · {confidence:.0%}")
        chosen = st.selectbox(
            "Class",
            prediction.classes,
            index=prediction.classes.index(label),
            key=f"class-{image.id}",
            label_visibility="collapsed",
        )
        accept, skip = st.columns(2)
        if accept.button("Accept" if chosen == label else "Correct", key=f"ok-{image.id}"):
            action = "accept" if chosen == label else "correct"
            project.decide(image.id, action, chosen, session=SESSION)
            st.toast(f"Saved: {image.name} → {chosen}")
            st.rerun()
        if skip.button("Skip", key=f"skip-{image.id}"):
            project.decide(image.id, "skip", session=SESSION)
            st.rerun()

trail = project.audit_trail()
if trail and st.button(f"Undo last decision ({trail[-1]['image']}: {trail[-1]['action']})"):
    project.decide(trail[-1]["image_id"], "undo", session=SESSION)
    st.rerun()
