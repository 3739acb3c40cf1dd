"""How the semi-supervised options of ssl.py change accuracy and calibration on meta-validation
classes (never test classes): the measurement behind `DEFAULT_SSL`. Prints a table.

    python scripts/ssl_defaults.py [--episodes 200]
"""

from __future__ import annotations

import argparse

from mssl_core.engine.checkpoints import load_model
from mssl_core.engine.data import characters
from mssl_core.engine.data.episodes import EpisodeSpec
from mssl_core.engine.episodic import run_episodes
from mssl_core.engine.ssl import SSLOptions, with_ssl

VARIANTS = {
    "none": SSLOptions(),
    "self-training (2 rounds, >= 0.9)": SSLOptions(pseudo_label_rounds=2, pseudo_label_threshold=0.9),
    "entropy minimisation 0.1": SSLOptions(entropy_weight=0.1),
    "consistency 0.1": SSLOptions(consistency_weight=0.1),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=["conv4-protonet", "conv4-softkmeans", "conv4-maml"])
    args = parser.parse_args()
    images = characters.load_characters("val", 40).images
    n_classes, n_per_class = images.shape[:2]
    print(f"validation characters, {args.episodes} episodes per row, 20 unlabeled/class, seed 7")
    print(f"{'model':24s} {'options':34s} {'5w1s acc':>16s} {'ECE':>6s} {'5w5s acc':>16s} {'ECE':>6s}")
    for name in args.models:
        model = load_model(name)
        pool = model.backbone.embed(model.backbone.preprocess_arrays(images.reshape(-1, 28, 28)))
        for label, options in VARIANTS.items():
            cells = []
            for shots in (1, 5):
                spec = EpisodeSpec(5, shots, 20, 0, 15)
                method = with_ssl(model.method, options)
                result = run_episodes(
                    method, pool, n_classes, n_per_class, spec, args.episodes, 7, task_calibration=False
                )
                cells.append(f"{result.mean:7.2%} ± {result.ci95:5.2%} {result.ece:6.3f}")
            print(f"{name:24s} {label:34s} {cells[0]} {cells[1]}", flush=True)


if __name__ == "__main__":
    main()
