"""The default method, chosen from what the model cards say each shipped method scored on
validation classes, and recorded back in the cards (checkpoints.py reads and writes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mssl_core.engine.checkpoints import MODELS_DIR, available_models, load_card, save_card


def validation_scores(folder: Path = MODELS_DIR) -> dict[str, float]:
    """Per method: mean validation accuracy (5-way 1- and 5-shot) over its shipped checkpoints'
    model cards."""
    scores: dict[str, list[float]] = {}
    for name in available_models(folder):
        card = load_card(name, folder)
        validation = card.get("validation", {})
        accuracies = [v["accuracy"] for setting, v in validation.items() if setting.startswith("5-way ")]
        if accuracies:
            scores.setdefault(card["method"], []).append(float(np.mean(accuracies)))
    return {method: float(np.mean(values)) for method, values in scores.items()}


def default_method(folder: Path = MODELS_DIR) -> str:
    """The method with the best mean validation accuracy in the shipped model cards."""
    scores = validation_scores(folder)
    return max(scores, key=scores.__getitem__) if scores else "softkmeans"


def record_default_in_cards(folder: Path = MODELS_DIR) -> None:
    """Say in every model card whether its method is the app's and CLI's default, and why."""
    scores = validation_scores(folder)
    best = default_method(folder)
    for name in available_models(folder):
        card = load_card(name, folder)
        card["default"] = {
            "is_default_method": card.get("method") == best,
            "default_method": best,
            "why": "highest mean validation accuracy (meta-validation characters, 5-way 1- and 5-shot) "
            "among the shipped methods: " + ", ".join(f"{m} {v:.2%}" for m, v in sorted(scores.items())),
        }
        save_card(name, card, folder)
