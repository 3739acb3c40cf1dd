"""MSSL Label Assist: meta-trained few-shot models adapted semi-supervised to a labeling task.

    import mssl_core
    result = mssl_core.label_folder("support/", "unlabeled/")
    result.to_csv("predictions.csv"); result.probabilities  # columns: result.classes

Packages: `engine` (backbones, methods, calibration, training, evaluation), `labeling` (adapting
to a batch of files), `project` (the app's store), `integrations`, `benchmarks`; ARCHITECTURE.md
has the map. Nothing here imports Streamlit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["LabelingResult", "SSLOptions", "label_folder", "label_images"]

if TYPE_CHECKING:
    from mssl_core.engine.ssl import SSLOptions
    from mssl_core.labeling.api import label_folder, label_images
    from mssl_core.labeling.folders import LabelingResult

_HOMES = {
    "label_folder": "mssl_core.labeling.api",
    "label_images": "mssl_core.labeling.api",
    "LabelingResult": "mssl_core.labeling.folders",
    "SSLOptions": "mssl_core.engine.ssl",
}


def __getattr__(name: str):
    # Imported on first use: `import mssl_core.project.store` (the app) stays free of torch.
    if name not in _HOMES:
        raise AttributeError(f"module 'mssl_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
