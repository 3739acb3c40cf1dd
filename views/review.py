"""Step 3 — Review: the images that most need a human first; accept, correct or skip each,
or accept everything above a confidence threshold. Every decision is saved before the page
says so, and the rest of the batch re-adapts to it at once."""
# Decision buttons act in callbacks (`on_click`): a click then costs one run of the page, not
# a run that reaches the button and a second after `st.rerun()`.

import streamlit as st

from mssl_core.project.ingest import demo_accuracy
from mssl_core.project.review import (
    accepted_errors,
    expected_errors,
    likely_most_errors,
    review_order,
    threshold_summary,
)
from mssl_core.project.store import decision_action
from views.access import md, require_unlocked
from views.common import (
    browser_session,
    callback_notice,
    current_predictions,
    labels_to_check,
    require_project,
    saved_in_callback,
    show_images,
)

PAGE_SIZE = 12

require_unlocked()
st.title("Review")
project = require_project()
SESSION = f"review {browser_session()}"  # recorded with each decision; undo stays within it
result = current_predictions(project)
prediction, decisions = result.prediction, result.decisions
pending = [i for i, image in enumerate(result.images) if image.id not in decisions]
done = len(result.images) - len(pending)
callback_notice()
st.progress(done / max(len(result.images), 1), text=f"{done} of {len(result.images)} reviewed")
labels_to_check(project, result, SESSION)


def shown_labels(indices: list[int]) -> dict[int, str]:
    """{image id: pseudo-label} of these images as this run shows them: a bulk accept takes
    exactly what its button said, even if the batch has re-adapted since."""
    return {result.images[i].id: prediction.labels[i] for i in indices}


def accept_all(labels: dict[int, str]) -> None:
    """A button's callback: accept these pseudo-labels in one transaction."""
    if saved_in_callback(lambda: project.decide_many(labels, session=SESSION)):
        st.toast(f"Saved {len(labels)} accepted labels.")


def checked_by_decisions(prediction) -> str:
    """What the reviewer's own decisions have done to the confidence shown, in words."""
    if not prediction.reviewed:
        return ""
    direction = "lowered" if prediction.review_factor > 1 else "raised"
    decisions = f"{prediction.reviewed} one-by-one decision{'s' if prediction.reviewed != 1 else ''}"
    return f", then checked against your {decisions} so far, which {direction} it"


# How good the rest already is, and a way to stop when it is good enough (calibrated confidence
# only: with one labeled image in a class there is no estimate to offer).
errors, rest_precision = expected_errors(prediction.confidence[pending])
if pending and prediction.confidence_checked:
    with st.container(border=True):
        most = likely_most_errors(errors, len(pending))
        st.markdown(
            f"About **{errors:.0f} wrong label{'s' if round(errors) != 1 else ''}** expected among the "
            f"{len(pending)} images not yet reviewed, likely no more than {most} "
            f"(expected precision {rest_precision:.1%}).",
            help=(
                "Expected from the confidence of each pseudo-label, calibrated on how well your labeled "
                f"examples predict each other{checked_by_decisions(prediction)}. A few labeled examples "
                "per class say only roughly how hard a batch is: on our development images the actual "
                "count stayed at or below the bound given here for 9 tasks in 10."
            ),
        )
        if prediction.reviewed:
            before = expected_errors(prediction.before_review[pending].max(1))[0]
            found, moved = ("more", "lowered") if prediction.review_factor > 1 else ("fewer", "raised")
            st.caption(
                f"Checked against your {prediction.reviewed} one-by-one decision"
                f"{'s' if prediction.reviewed != 1 else ''}: they found {found} wrong labels than the "
                f"confidence promised, so it was {moved} (from your labeled examples alone: about "
                f"{before:.0f} expected)."
            )
        target = st.select_slider("Precision you need", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999], value=0.99)
        if rest_precision >= target:
            st.success(
                f"The rest already reaches {target:.1%}. Accepting it leaves about {errors:.1f} errors "
                f"(likely no more than {most})."
            )
            st.button(
                f"Accept the remaining {len(pending)} images",
                type="primary",
                on_click=accept_all,
                args=(shown_labels(pending),),
            )
        else:
            st.caption(f"Keep reviewing: the rest is at {rest_precision:.1%}, below the {target:.1%} you need.")
        measured = demo_accuracy(
            [result.images[i].sha256 for i in pending], [prediction.labels[i] for i in pending]
        )
        if measured:
            known, right = measured
            st.caption(
                f"Demo images come with their true labels: **{round(known * (1 - right))}** of these {known} "
                "are actually wrong. The estimate above is what the app can say without them; it rests "
                "on how well your labeled examples predict each other."
            )

with st.container(border=True):
    st.write("**Accept all above a threshold**")
    threshold = st.slider("Confidence threshold", 0.5, 1.0, 0.95, 0.01)
    pending_confidence = prediction.confidence[pending]
    count, precision = threshold_summary(pending_confidence, threshold)
    if not count:
        expected = ""
    elif prediction.confidence_checked:
        wrong, most = accepted_errors(count, precision)
        about = f"about {wrong:.0f} wrong among them, likely " if round(wrong) else "likely "
        expected = (
            f", expected precision {precision:.1%}: {about}no more than {most} wrong (confidence "
            f"calibrated on validation tasks and your labeled examples{checked_by_decisions(prediction)})"
        )
    else:  # one labeled image in some class: off validation's domain the estimate can be far off
        expected = (
            "; precision not estimated: with a single labeled example in some class, confidence "
            "could not be checked on your images"
        )
    st.write(f"Accepts **{count}** images{expected}.")
    above = [i for i in pending if prediction.confidence[i] >= threshold]
    st.button(
        f"Accept {count} images",
        disabled=count == 0,
        shortcut="Shift+A",
        on_click=accept_all,
        args=(shown_labels(above),),
    )

order = review_order(prediction.probabilities[pending])
queue = [pending[i] for i in order[: PAGE_SIZE + 1]]


def decide(image, shown, action: str, label: str | None = None, probabilities: dict | None = None) -> None:
    """A button's callback, so it runs before the page does: one run per decision, the page
    then re-adapted to it. Commits unless another session decided the image since this page
    showed it (`shown`: its decision then); the page says which happened. `probabilities`: the
    model's for the image as shown, which the decision checks (review.review_factor)."""
    if saved_in_callback(
        lambda: project.decide(
            image.id, action, label, session=SESSION, shown=shown, model_probabilities=probabilities
        )
    ):
        st.toast(f"Saved: {md(image.name)} → {md(label or action)}")


def choose(index: int, chosen: str) -> tuple:
    """`decide`'s arguments for picking `chosen` for the batch image at `index`: an accept when
    it is the model's answer."""
    image, predicted = result.images[index], prediction.labels[index]
    shown = dict(zip(prediction.classes, map(float, prediction.before_review[index]), strict=True))
    return image, result.decisions.get(image.id), decision_action(chosen, predicted), chosen, shown


def undo(last: dict) -> None:
    saved_in_callback(lambda: project.decide(last["image_id"], "undo", session=SESSION))


# Undo is this session's own: another tab's decisions are never undone from here.
last = project.undoable(SESSION)
if last:
    label = f"Undo your last decision ({md(last['image'])}: {last['action']})"
    st.button(label, shortcut="Z", on_click=undo, args=(last,))

if not queue:
    st.success("Every image has been reviewed.")
    st.page_link("views/export.py", label="Export the labels", icon=":material/arrow_forward:")
    st.stop()

# The image that most needs a person, with keyboard shortcuts: A accept, 1-9 class, S skip.
focus = result.images[queue[0]]
focus_label, focus_confidence = prediction.labels[queue[0]], prediction.confidence[queue[0]]
with st.container(border=True):
    picture, actions = st.columns([1, 3])
    with actions:
        # the image and its name are drawn after the buttons that take the keys: on a freshly
        # opened page a key pressed as soon as the image shows finds its shortcut (the page draws
        # what it receives in batches; docs/review.md, "A first key press that went nowhere")
        next_image = st.empty()
        st.caption("Keyboard: A accept · 1–9 pick the class · S skip · Z undo")
        st.button(
            f"Accept '{md(focus_label)}'",
            type="primary",
            shortcut="A",
            key="focus-accept",
            on_click=decide,
            args=choose(queue[0], focus_label),
        )
        # every class, its full name on a button as wide as it needs, wrapping to further rows;
        # keys 1-9 for the first nine
        with st.container(horizontal=True, wrap=True):
            for number, name in enumerate(prediction.classes, 1):
                shortcut = str(number) if number <= 9 else None
                label = f"{number} · {md(name)}" if shortcut else md(name)
                st.button(
                    label,
                    shortcut=shortcut,
                    key=f"focus-class-{name}",
                    width="content",
                    on_click=decide,
                    args=choose(queue[0], name),
                )
        st.button(
            "Skip",
            shortcut="S",
            key="focus-skip",
            on_click=decide,
            args=(focus, result.decisions.get(focus.id), "skip"),
        )
        next_image.write(
            f"**Next: {md(focus.name)}** — model says **{md(focus_label)}** ({focus_confidence:.0%})"
        )
    show_images([(focus.path, "")], 180, picture)

st.write("**Also uncertain**")
columns = st.columns(4)
for slot, index in enumerate(queue[1:]):
    image = result.images[index]
    label = prediction.labels[index]
    with columns[slot % 4].container(border=True):
        show_images([(image.path, image.name)], 112)
        st.write(f"**{md(label)}** · {prediction.confidence[index]:.0%}")
        chosen = st.selectbox(
            "Class",
            prediction.classes,
            index=prediction.classes.index(label),
            key=f"class-{image.id}",
            label_visibility="collapsed",
        )
        accept, skip = st.columns(2)
        accept.button(
            "Accept" if chosen == label else "Correct",
            key=f"ok-{image.id}",
            on_click=decide,
            args=choose(index, chosen),
        )
        skip.button(
            "Skip",
            key=f"skip-{image.id}",
            on_click=decide,
            args=(image, result.decisions.get(image.id), "skip"),
        )
