"""Step 6 — Model: what the model is, how it was meta-trained, and how well it does on classes
it never saw, in plain words, from the model cards."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from mssl_core.benchmarks.crossdomain import load_results, plain_summary
from mssl_core.benchmarks.simulate import load_curves
from mssl_core.engine.checkpoints import available_models, load_card
from mssl_core.engine.methods import METHODS
from mssl_core.engine.model_cards import default_method
from views.access import require_unlocked

require_unlocked()
st.title("The model")
st.markdown(
    """
**What it is.** A network that turns an image into a list of numbers (an *embedding*) so that
images of the same kind land close together, plus a rule that sorts new images by how close
they are to your examples.

**How it learnt.** It was *meta-trained*: instead of learning fixed classes, it practised
thousands of small labeling tasks on rendered handwritten characters ("here are 1 or 5
examples of each of 10 characters, and some unlabeled images; sort these"), so it learnt *how
to learn* new classes from a few examples. The semi-supervised methods also use your unlabeled
images: the groups they form pull each class centre to where that class really lies.

**Three families of meta-learning.** *Metric-based* methods learn a way of comparing images
(prototypical, matching and siamese networks, label propagation); a *model-based* one learns
to store examples in a memory and look new images up in it; an *optimization-based* one (MAML)
learns a starting point from which a few learning steps on your examples go a long way. Each
can use your unlabeled images too, and the table below measures each with and without them.

**Honest confidence.** A "90% confident" prediction should be right about 90% of the time.
The confidence is calibrated on validation tasks of the same shape (as many classes, as many
labeled images per class), and adjusted on your own labeled examples whenever every class has
at least two of them.
"""
)
names = available_models()
if not names:
    st.warning("No model is installed yet: run `python -m mssl_core train --all`.")
    st.stop()
st.info(f"Recommended method (best accuracy on validation classes): **{default_method()}**")

st.subheader("The methods")
shipped = {load_card(name).get("method") for name in names}
st.dataframe(
    pd.DataFrame(
        [
            {"method": name, "family": cls.family, "what it does": cls.description}
            for name, cls in METHODS.items()
            if name in shipped or not cls.meta_trained
        ]
    ),
    hide_index=True,
)

cards = {name: load_card(name) for name in names}
training = [
    {
        "model": name,
        "meta-training tasks": card["training"]["episodes"],
        "task shape": f"{card['training']['ways']}-way, {card['training']['shots']} shots",
        "training time": f"{card.get('wall_time_s', 0) / 60:.1f} min",
    }
    for name, card in cards.items()
    if "training" in card
]
st.subheader("How each model was trained")
st.dataframe(pd.DataFrame(training), hide_index=True)

cross_domain = plain_summary(load_results())
if cross_domain:
    st.subheader("On images unlike anything it was trained on")
    st.markdown(
        "Ten kinds of images the models never saw: scans, micrographs, textures, camera frames, "
        "photos, silhouettes. Each task: a few labeled images per class and a batch to "
        "pseudo-label, as you would bring them. **This app** is what you get with its defaults; "
        "the **best simple baseline** is the best of four simple methods on the same tasks "
        "(nearest class mean on raw pixels; on ImageNet features: nearest class mean, logistic "
        "regression, label spreading). *Without the batch*: this app fitted to the labeled images "
        "alone, what the unlabeled batch adds. Domains marked *used to make choices* are where its "
        "settings were chosen; the others are untouched tests. **Promised** is the mean "
        "confidence of the images at 90% or more, what *accept all above 0.9* would promise; "
        "**actually right** is what they are."
    )
    table = pd.DataFrame(cross_domain)
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            name: st.column_config.NumberColumn(format="percent")
            for name in (
                "right, this app",
                "± (95% CI)",
                "right, best simple baseline",
                "right, this app without the batch",
                "at ≥ 90% confidence: promised",
                "actually right",
            )
        },
    )
    widest = table["classes"] == table.groupby("domain")["classes"].transform("max")
    five = table[widest & (table["labeled per class"] == 5)]
    figure = go.Figure(
        [
            go.Bar(name="this app", x=five["domain"], y=five["right, this app"] * 100),
            go.Bar(name="best simple baseline", x=five["domain"], y=five["right, best simple baseline"] * 100),
        ]
    )
    figure.update_layout(barmode="group", yaxis_title="% of the batch labeled right", height=380)
    st.plotly_chart(figure, width="stretch")
    st.caption(
        "Five labeled images per class, as many classes as the domain has (up to five). "
        "Full table: docs/crossdomain.txt, measured with the current defaults, 200 tasks a bar."
    )
    one_shot = table[(table["labeled per class"] == 1) & table["right, this app without the batch"].notna()]
    gain = (one_shot["right, this app"] - one_shot["right, this app without the batch"]) * 100
    room = gain[one_shot["right, this app without the batch"] < 0.99]
    if len(room):
        st.markdown(
            f"**What the unlabeled batch adds.** With one labeled image per class, using the batch "
            f"labels {room.min():.0f} to {room.max():.0f} more images in every hundred right than the "
            "labeled images alone would, wherever they leave room (below 99% right)."
        )

curves = load_curves()
if curves:
    st.subheader("How much of a batch a person needs to review")
    st.markdown(
        "A simulated reviewer who knows the right answers works through a batch on the Review "
        "page: it accepts each pseudo-label that is right and corrects the others, and the "
        "batch re-adapts after every decision. Below: how quickly the batch becomes correct "
        "when the app chooses what to show next, against going through it in random order."
    )
    tasks = list(dict.fromkeys(row["task"] for row in curves))
    task = st.selectbox("Images", tasks, index=tasks.index("demo") if "demo" in tasks else 0)
    shown = {row["order"]: row for row in curves if row["task"] == task}
    figure = go.Figure(
        [
            go.Scatter(
                x=[p["actions"] for p in row["curve"]],
                y=[100 * p["batch_accuracy"] for p in row["curve"]],
                name="the app's order" if order == "app" else "random order",
                mode="lines",
            )
            for order, row in shown.items()
        ]
    )
    figure.update_layout(
        xaxis_title="images reviewed (accept or correct)", yaxis_title="% of the batch right", height=360
    )
    st.plotly_chart(figure, width="stretch")
    app, random = shown.get("app"), shown.get("random")
    if app and random and app["to_99"] is not None:
        in_random = random["to_99"] if random["to_99"] is not None else f"more than {len(random['curve']) - 1}"
        st.write(
            f"To get these {app['batch']:,} images 99% right, review about **{app['to_99']}** of them "
            f"in the app's order ({app['to_99'] / app['batch']:.0%}); in random order, {in_random}."
        )

held_out = [row for card in cards.values() for row in card.get("held_out", [])]
if held_out:
    st.subheader("Measured on classes never seen in training")
    st.caption(
        "Mean accuracy over many random tasks, ± the 95% confidence interval; calibration error "
        "(ECE) is the average gap between confidence and accuracy (0 is perfect)."
    )
    table = pd.DataFrame(
        {
            "data": [r["dataset"] for r in held_out],
            "task": [r["setting"] for r in held_out],
            "model": [r["method"] for r in held_out],
            "uses unlabeled": ["yes" if r.get("semi_supervised") else "no" for r in held_out],
            "accuracy": [f"{r['accuracy']:.2%} ± {r['ci95']:.2%}" for r in held_out],
            "calibration error": [f"{r['ece']:.3f}" for r in held_out],
            "tasks": [r["episodes"] for r in held_out],
        }
    )
    st.dataframe(table, hide_index=True, height=420)

diagrams = {
    name: card["reliability_5way_5shot"] for name, card in cards.items() if "reliability_5way_5shot" in card
}
if diagrams:
    st.subheader("Reliability: does the confidence mean what it says?")
    chosen = st.selectbox("Model", list(diagrams), index=0)
    bins = diagrams[chosen]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot"}))
    figure.add_trace(
        go.Scatter(
            x=[b["confidence"] for b in bins],
            y=[b["accuracy"] for b in bins],
            mode="markers+lines",
            marker={"size": [max(6, min(30, b["count"] ** 0.5)) for b in bins]},
            name=chosen,
            text=[f"{b['count']} predictions" for b in bins],
        )
    )
    figure.update_layout(
        xaxis_title="confidence", yaxis_title="fraction correct", height=420, xaxis_range=[0, 1.02]
    )
    st.plotly_chart(figure, width="stretch")
    st.caption("Held-out characters, 5-way 5-shot tasks with 20 unlabeled images per class.")
