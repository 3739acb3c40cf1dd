"""Does the per-task domain factor keep confidence honest when the images change? Measured on
validation characters only (150 classes), each shown as is and under five corruptions that
move them away from what the models were meta-trained on; 5-way 5-shot, 20 unlabeled per
class, 150 tasks per domain. For each, the ECE with the validation temperature table alone and
with the domain factor under a prior sd of 1 (shipped), 2 and none (maximum likelihood), and
the factor that would be right (fitted on the queries themselves, for comparison only):

    python scripts/calibration_under_shift.py [MODEL ...] > docs/calibration_shift.txt
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from scipy import ndimage

from mssl_core.engine.calibration import expected_calibration_error, fit_temperature, held_out_domain_factor
from mssl_core.engine.checkpoints import load_model
from mssl_core.engine.data import characters
from mssl_core.engine.data.episodes import EpisodeSampler, EpisodeSpec
from mssl_core.engine.episodic import episode_tensors

DOMAINS = ("clean", "blur", "noise", "fill", "texture", "invert")
PRIORS = {"sd 1": 1.0, "sd 2": 2.0, "none": None}
CLASSES, TASKS = 150, 150
MODELS = (
    "conv4-protonet",
    "conv4-softkmeans",
    "conv4-propagation",
    "mobilenetv2-protonet",
    "mobilenetv2-propagation",
    "mobilenetv2-matching",
)


def corrupt(domain: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = images.astype(np.float32)
    shifted = {
        "clean": lambda: x,
        "blur": lambda: ndimage.gaussian_filter(x, sigma=(0, 0, 1.5, 1.5)),
        "noise": lambda: x + rng.normal(0, 60, x.shape),
        "fill": lambda: ndimage.maximum_filter(x, size=(1, 1, 5, 5)),  # strokes become blobs
        "texture": lambda: x * rng.uniform(0.3, 1.0, x.shape) + rng.uniform(0, 90, x.shape),
        "invert": lambda: 255 - x,
    }[domain]()
    return np.clip(shifted, 0, 255).astype(np.uint8)


def embedded(model, images: np.ndarray) -> torch.Tensor:
    flat = images.reshape(-1, *images.shape[2:])
    backbone = model.backbone
    with torch.no_grad():
        if backbone.name == "mobilenetv2":
            chunks = np.array_split(flat, max(1, len(flat) // 64))
            return backbone.head(
                torch.cat([backbone.frozen_features(backbone.preprocess_arrays(c)) for c in chunks])
            )
        return backbone.embed(backbone.preprocess_arrays(flat))


def ece(logits: list[torch.Tensor], labels: list[torch.Tensor], factors: list[float]) -> float:
    confidence, correct = [], []
    for task_logits, task_labels, factor in zip(logits, labels, factors, strict=True):
        best, predicted = torch.softmax(task_logits / factor, dim=1).max(1)
        confidence.append(best.numpy())
        correct.append((predicted == task_labels).numpy())
    return expected_calibration_error(np.concatenate(confidence), np.concatenate(correct))


def main(names: list[str]) -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    clean = characters.load_characters("val", 40).images[:CLASSES]
    domains = {domain: corrupt(domain, clean, rng) for domain in DOMAINS}
    print(__doc__.split("\n\n")[0], "\n")
    print(f"{'model':24s} {'domain':8s} {'accuracy':>8s} {'right factor':>12s} {'ECE table':>9s} "
          + " ".join(f"{'ECE ' + p:>9s}" for p in PRIORS))  # fmt: skip
    for name in names:
        model = load_model(name)
        method = model.method
        for domain, images in domains.items():
            pool = embedded(model, images)
            sampler = EpisodeSampler(CLASSES, 40, EpisodeSpec(5, 5, 20, 0, 15), seed=77)
            logits, labels, factors = [], [], {prior: [] for prior in PRIORS}
            with torch.no_grad():
                for _ in range(TASKS):
                    episode = sampler.sample()
                    support, support_labels, unlabeled, query = episode_tensors(pool, episode)
                    for prior, sd in PRIORS.items():
                        factors[prior].append(
                            held_out_domain_factor(method, support, support_labels, unlabeled, sd)
                        )
                    method.fit(support, support_labels, unlabeled)
                    logits.append(method.logits(query) / method.temperature)
                    labels.append(torch.from_numpy(episode.query_labels))
            accuracy = np.mean(
                [(task.argmax(1) == y).float().mean() for task, y in zip(logits, labels, strict=True)]
            )
            right = fit_temperature(torch.cat(logits), torch.cat(labels))
            table = ece(logits, labels, [1.0] * TASKS)
            with_factor = " ".join(f"{ece(logits, labels, factors[p]):9.3f}" for p in PRIORS)
            print(
                f"{name:24s} {domain:8s} {accuracy:8.1%} {right:12.2f} {table:9.3f} {with_factor}", flush=True
            )


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODELS))
