"""Temperature scaling (Guo et al. 2017) and expected calibration error, so that "90% confident"
means right about 90% of the time. Temperatures are fitted on meta-validation classes only.

One temperature does not fit every task: with more labeled images per class a prototype sits
closer to its class mean and the right temperature falls (measured on validation characters,
MobileNetV2 prototypical networks: 0.98 at 1 shot, 0.52 at 5, 0.45 at 10). So a model keeps a
table of temperatures, one per task shape (ways x shots) of the validation grid, and a task
reads its own from it, interpolated in log-log space and clamped to the grid's edges."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

HELD_OUT_UNLABELED = 250  # unlabeled images used by the held-out refits
MAX_FOLDS = 10  # held-out refits at most: a review that grows the labeled set stays fast
MAX_LOG_TEMPERATURE = 4.0  # T within [e^-4, e^4]: separable data would otherwise drive T to 0
SHOTS_GRID = (1, 2, 5, 10)  # labeled images per class of the validation tasks
WAYS_GRID = (5, 10, 20)  # classes of the validation tasks
DOMAIN_PRIOR_SD = 1.0  # prior sd of log(domain factor): the table holds within a factor e
# (checked on simulated shifts of validation characters: scripts/calibration_under_shift.py)
CROSS_FIT_GROUPS = 25  # calibrations fitted for `HeldOut.cross_fitted`, at most


def task_shape(support_labels: Tensor) -> tuple[float, int]:
    """(labeled images per class, classes) of a task."""
    ways = int(torch.unique(support_labels).numel())
    return len(support_labels) / max(ways, 1), ways


def temperature_for_shape(table: Tensor, shots: float, ways: int) -> float:
    """The temperature of a task from a `(len(SHOTS_GRID), len(WAYS_GRID))` table: linear in
    log T over log shots, then over log ways; beyond the grid, its edge."""
    log_table = table.double().log().numpy()
    by_ways = [np.interp(np.log(shots), np.log(SHOTS_GRID), log_table[:, w]) for w in range(len(WAYS_GRID))]
    return float(np.exp(np.interp(np.log(ways), np.log(WAYS_GRID), by_ways)))


def fit_temperature(logits: Tensor, labels: Tensor, prior_sd: float | None = None) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T); with
    `prior_sd`, the most probable T under a normal prior on log T centred on 1 (MAP).

    The likelihood is convex in 1/T, so a bounded scalar search over log T finds its optimum
    whatever the scale of the logits (a gradient step from T = 1 can overshoot to a bound)."""
    logits, labels = logits.double(), labels.long()

    def loss(log_temperature: float) -> float:
        value = torch.nn.functional.cross_entropy(logits / np.exp(log_temperature), labels).item()
        if prior_sd is not None:  # the prior's weight against the mean (not summed) likelihood
            value += log_temperature**2 / (2 * prior_sd**2 * len(labels))
        return value

    best = minimize_scalar(
        loss, bounds=(-MAX_LOG_TEMPERATURE, MAX_LOG_TEMPERATURE), method="bounded", options={"xatol": 1e-5}
    )
    return float(np.exp(best.x))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """Per confidence bin: its range, count, mean confidence and accuracy (a reliability diagram)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "count": int(in_bin.sum()),
                    "confidence": float(confidence[in_bin].mean()),
                    "accuracy": float(correct[in_bin].mean()),
                }
            )
    return rows


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Count-weighted mean gap between confidence and accuracy over equal-width bins."""
    rows = reliability(confidence, correct, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / total)


def calibrated_logits(method, x: Tensor) -> Tensor:
    """Logits at the table's temperature; for baselines without one, log-probabilities (whose
    softmax is the same probabilities)."""
    if method.temperature is None:
        return method.logits(x)  # a baseline's: its log-probabilities
    return method.logits(x) / method.temperature


def held_out_predictions(
    method, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Logits (at the table's temperature, see `calibrated_logits`) and labels of the user's
    labeled images, each predicted by the method adapted to the others, fold by fold
    (`held_out_folds`; rows in the order of `held_out_rows`). One image of every class at once
    keeps the task balanced: holding out a single image leaves its own class one short, which lowers its score
    in methods that sum over labeled images (siamese, matching). Every class needs two or more
    images."""
    if unlabeled is not None and len(unlabeled) > HELD_OUT_UNLABELED:
        # one refit per fold: a fixed sample of the batch keeps that cheap at 10,000+
        keep = torch.randperm(len(unlabeled), generator=torch.Generator().manual_seed(0))[:HELD_OUT_UNLABELED]
        unlabeled = unlabeled[keep]
    scaled_logits, held_labels = [], []
    with torch.no_grad():
        for held in held_out_folds(support_labels):
            # the held-out images join the unlabeled ones, as the batch images they stand for
            # do: transductive methods then score them the way they score the batch
            fold_unlabeled = support[held] if unlabeled is None else torch.cat([unlabeled, support[held]])
            method.fit(support[~held], support_labels[~held], fold_unlabeled)
            scaled_logits.append(calibrated_logits(method, support[held]))
            held_labels.append(support_labels[held])
    return torch.cat(scaled_logits), torch.cat(held_labels)


def held_out_folds(support_labels: Tensor) -> list[Tensor]:
    """The folds of `held_out_predictions`, as masks over the labeled images: fold f holds out
    the images whose rank within their class is f modulo the number of folds (the smallest
    class's count, at most MAX_FOLDS), so every image is held out exactly once."""
    counts = torch.bincount(support_labels)
    folds = int(min(counts[counts > 0].min(), MAX_FOLDS))
    position = torch.zeros(len(support_labels), dtype=torch.long)  # rank of each image in its class
    for c in range(len(counts)):
        members = (support_labels == c).nonzero().squeeze(1)
        position[members] = torch.arange(len(members))
    return [position % folds == fold for fold in range(folds)]


def held_out_rows(support_labels: Tensor) -> Tensor:
    """Which labeled image each row of `held_out_predictions` is."""
    return torch.cat([held.nonzero().squeeze(1) for held in held_out_folds(support_labels)])


def held_out_log_loss(
    method, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None
) -> float | None:
    """Mean negative log-probability of each labeled image's class, predicted by the method
    adapted to the others at its table's temperature (`held_out_predictions`): a proper score,
    so it rewards being right and being honestly confident. None if any class has one image.
    Leaves `method` fitted to a fold: fit it again before predicting."""
    if (torch.bincount(support_labels) < 2).any():
        return None
    logits, labels = held_out_predictions(method, support, support_labels, unlabeled)
    return float(torch.nn.functional.cross_entropy(logits, labels))


def held_out_domain_factor(
    method,
    support: Tensor,
    support_labels: Tensor,
    unlabeled: Tensor | None,
    prior_sd: float | None = DOMAIN_PRIOR_SD,
) -> float | None:
    """How much the task's temperature should differ from the model's table, measured on the
    user's own labeled images (`held_out_predictions`): the table comes from validation
    characters, and photos of another domain may need softer (or sharper) confidence. The
    factor r is the most probable one for those predictions with log r ~ N(0, prior_sd²), so a
    few lucky or unlucky images move it little (`prior_sd` None: the most likely one). Multiply
    the task's own table temperature by r. None when a class has a single image or the method
    has no temperature table."""
    measured = held_out_calibration(method, support, support_labels, unlabeled, prior_sd)
    return None if measured is None else measured[0]


def held_out_calibration(
    method,
    support: Tensor,
    support_labels: Tensor,
    unlabeled: Tensor | None,
    prior_sd: float | None = DOMAIN_PRIOR_SD,
) -> tuple[float, HeldOut] | None:
    """`held_out_domain_factor`, and the held-out predictions it was measured on."""
    counts = torch.bincount(support_labels)
    if len(counts) < 2 or (counts < 2).any() or method.temperature is None:
        return None
    logits, labels = held_out_predictions(method, support, support_labels, unlabeled)
    held_out = HeldOut({"": logits}, labels, held_out_rows(support_labels), prior_sd)
    factors, _, _ = held_out.fit()
    return factors[""], held_out


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The user's labeled images, each predicted from the others (`held_out_predictions`) by one
    source or several (logits at each one's table temperature; rows in the order of
    `held_out_rows`, which `rows` holds). Confidence is calibrated on them (`fit`); whether a
    label looks wrong is judged on `cross_fitted`."""

    logits: dict[str, Tensor]
    labels: Tensor
    rows: Tensor  # which labeled image each row is
    prior_sd: float | None

    def fit(self, keep: Tensor | None = None) -> tuple[dict[str, float], float, Tensor]:
        """Each source's factor on its table temperature, fitted on the rows of `keep` (all
        by default); with several sources, the temperature of their averaged calibrated
        log-probabilities (else 1); and every row's probabilities so calibrated."""
        keep = torch.ones(len(self.labels), dtype=torch.bool) if keep is None else keep
        factors = {
            name: fit_temperature(logits[keep], self.labels[keep], prior_sd=self.prior_sd)
            for name, logits in self.logits.items()
        }
        averaged = torch.stack(
            [torch.log_softmax(logits / factors[name], dim=1) for name, logits in self.logits.items()]
        ).mean(0)
        temperature = 1.0
        if len(self.logits) > 1:
            temperature = fit_temperature(averaged[keep], self.labels[keep], prior_sd=self.prior_sd)
        return factors, temperature, torch.softmax(averaged / temperature, dim=1)

    @cached_property
    def cross_fitted(self) -> Tensor:
        """Each labeled image's probabilities (rows in the order of the labeled images), with
        the calibration fitted without it (in groups beyond CROSS_FIT_GROUPS images). A wrong
        label calibrated with itself softens the temperature until it looks half plausible:
        a flipped image's median probability of its given class was 0.012-0.044 on the three
        development domains whose held-out predictions are mostly right, 0.000-0.003 cross-fitted
        (docs/review.md). Computed when first asked: only the check of the labels needs it."""
        groups = torch.arange(len(self.labels)) % min(len(self.labels), CROSS_FIT_GROUPS)
        held = torch.empty(len(self.labels), next(iter(self.logits.values())).shape[1])
        for group in range(int(groups.max()) + 1):
            left_out = groups == group
            held[left_out] = self.fit(~left_out)[2][left_out].float()
        probabilities = torch.empty_like(held)
        probabilities[self.rows] = held
        return probabilities
