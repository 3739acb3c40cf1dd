"""The learning engine: image backbones, the few-shot methods behind one contract, the
semi-supervised terms, calibration, meta-training and the held-out evaluation. Knows nothing of
labeling projects or the app."""
