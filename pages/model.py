"""Model: the shipped meta-trained models and their measured, held-out results, in plain words."""

import pandas as pd
import streamlit as st

from mssl_core.checkpoints import available_models
from mssl_core.labeling import default_method, load_card

st.title("The model")
st.markdown(
    """
Each model was **meta-trained** on thousands of rendered handwritten characters: it practised
many small labeling tasks ("here are 1 or 5 examples of each of 10 characters, plus some
unlabeled ones; sort these") so that it learns *how to learn* new classes from few examples.
The numbers below are measured on character classes it never saw during training.
"""
)
names = available_models()
if not names:
    st.warning("No model is installed yet: run `python -m mssl_core train --all`.")
    st.stop()
st.info(f"Default method (best on validation classes): **{default_method()}**")
rows = []
for name in names:
    card = load_card(name)
    for setting, result in card.get("validation", {}).items():
        rows.append(
            {
                "model": name,
                "task (validation classes)": setting,
                "accuracy": f"{result['accuracy']:.1%} ± {result['ci95']:.1%}",
                "calibration error": f"{result['ece']:.3f}",
                "training time": f"{card.get('wall_time_s', 0) / 60:.0f} min",
            }
        )
st.dataframe(pd.DataFrame(rows), hide_index=True, use_container_width=True)
