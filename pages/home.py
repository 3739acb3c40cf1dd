"""Home: what the app does and how to use it today."""

import streamlit as st

st.title("MSSL Label Assist")
st.markdown(
    """
Give a handful of labeled images and a large unlabeled batch; get the batch back
pseudo-labeled, with a confidence you can trust.

Under the hood, a model **meta-trained** to learn from a few examples adapts to your classes,
and uses your **unlabeled** images too (soft k-means refinement of the class prototypes).

The browser labeling flow (upload → pseudo-label → review → export) is being built. Today the
same engine runs from the command line:

```
python -m mssl_core label --support SUPPORT_DIR --unlabeled UNLABELED_DIR --out predictions.csv
```

`SUPPORT_DIR` holds one sub-folder of example images per class. See the **Model** page for what
the model is and how well it does on classes it never saw.
"""
)
