"""The one labeling flow shared by the CLI and the app: decode -> embed -> adapt -> predict.

`choose_model` picks the backbone (measured on the user's own support set where it can be)
and the method (the best measured on validation classes, from the model cards).
"""

from __future__ import annotations

import copy
import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mssl_core.backbones import embed_images
from mssl_core.bulk import embed_files
from mssl_core.calibration import HELD_OUT_UNLABELED, held_out_domain_factor, held_out_log_loss
from mssl_core.checkpoints import MODELS_DIR, Model, available_models, load_model
from mssl_core.embedding_cache import EmbeddingCache
from mssl_core.feature_sources import CENTRED_SOURCES, centred_model
from mssl_core.images import ImageError, class_folder_files, decode_image, list_files
from mssl_core.methods import METHODS, make_method
from mssl_core.ssl import SSLOptions, with_ssl

# Image features the automatic choice compares, the default first (see `choose_backbone`).
FEATURE_SOURCES = ("imagenet", "conv4", "pixels", "mobilenetv2")
# Both fitted on the development domains only (`python -m mssl_core crossdomain --fit-margin`,
# `crossdomain.fit_one_shot_factors`; docs/crossdomain.txt): the log loss another source must
# win by over the default (a few held-out images pick a winner noisily), and the factor on the
# temperature table where confidence cannot be checked on the user's images (one labeled image
# in a class): the table comes from characters and is far too sure of itself on other images.
SOURCE_MARGIN = 0.2
UNCHECKED_FACTORS = {"imagenet": 5.389, "conv4": 2.406}
SMALL_GRAY_SIDE = 64  # at most this size and grayscale: drawings/characters, Conv-4's domain
# Pen strokes are mostly pure ink: the median meta-training character has 41% of its non-
# background pixels within 10% of full ink, and 99% have at least 19.6%; photographs' graded tones
# have few (Fashion-MNIST's median clothing item: 5%).
DRAWING_INK_PURITY = 0.19
FIT_LIMIT = 20_000  # batch images a `label` run adapts to; more add little and cost n^2 time


@dataclass
class Prediction:
    """Adapted predictions for a batch: probabilities over `classes`, label and confidence."""

    classes: list[str]
    probabilities: np.ndarray
    embeddings: np.ndarray
    confidence_checked: bool = False  # the temperature was adjusted on the user's labeled images

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(1)]

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(1)


@dataclass
class PredictionRow:
    """One unlabeled file's outcome: a label and confidence, or the reason it could not be read."""

    path: str
    label: str = ""
    confidence: float | None = None
    error: str = ""
    probabilities: list[float] = field(default_factory=list)


@dataclass
class LabelingResult:
    classes: list[str]
    rows: list[PredictionRow]
    model_name: str
    backbone_reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # model (load + support), decode, embed, adapt


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
        path = folder / f"{name}.json"
        card = load_card(name, folder)
        card["default"] = {
            "is_default_method": card.get("method") == best,
            "default_method": best,
            "why": "highest mean validation accuracy (meta-validation characters, 5-way 1- and 5-shot) "
            "among the shipped methods: " + ", ".join(f"{m} {v:.2%}" for m, v in sorted(scores.items())),
        }
        path.write_text(json.dumps(card, indent=2, ensure_ascii=False))


def load_card(name: str, folder: Path = MODELS_DIR) -> dict:
    """The JSON model card of a shipped model ({} if it has none)."""
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def model_for(method: str, backbone: str, folder: Path = MODELS_DIR) -> Model:
    """The model for (image features, method): a meta-trained checkpoint, or for the headless
    sources (`imagenet`, `pixels`) the MobileNetV2 checkpoint's method on task-centred features
    (see feature_sources.py). Baselines borrow the features of the prototypical checkpoint,
    since they are not meta-trained themselves."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if backbone in CENTRED_SOURCES:
        return centred_model(model_for(method, "mobilenetv2", folder), backbone)
    if getattr(METHODS[method], "meta_trained", True):
        return load_model(f"{backbone}-{method}", folder)
    model = load_model(f"{backbone}-protonet", folder)
    return Model(f"{backbone}+{method}", model.backbone, make_method(method), model.card, model.fingerprint)


@dataclass
class AdaptedTask:
    """A method fitted to one task, ready to predict any number of images, in any batches."""

    classes: list[str]
    method: object
    temperature: float | None  # None: the method's own (baselines without a temperature table)
    confidence_checked: bool = False  # the temperature was adjusted on the user's labeled images

    def probabilities(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            if self.temperature is None:
                return self.method.predict_proba(x)
            return torch.softmax(self.method.logits(x) / self.temperature, dim=1)

    def predict(self, x: Tensor) -> Prediction:
        return Prediction(self.classes, self.probabilities(x).numpy(), x.numpy(), self.confidence_checked)


def fit_task(
    model: Model,
    classes: list[str],
    support: Tensor,
    support_labels: Tensor,
    unlabeled: Tensor,
    ssl: SSLOptions | None = None,
) -> AdaptedTask:
    """Fit the method to the task (support + unlabeled), with the semi-supervised terms of
    `ssl` switched on.

    Confidence uses the validation temperature of the task's shape; where every class has two
    or more labeled images, times the domain factor measured on them (see calibration.py),
    otherwise times the factor fitted for the features on the development domains."""
    task_unlabeled = unlabeled if len(unlabeled) else None
    # A private copy: app sessions run in threads and share one loaded model.
    method = with_ssl(copy.deepcopy(model.method), ssl)
    factor = held_out_domain_factor(method, support, support_labels, task_unlabeled)
    checked = factor is not None
    if not checked and hasattr(method, "temperature"):
        factor = UNCHECKED_FACTORS.get(model.backbone.name, 1.0)
    with torch.no_grad():
        method.fit(support, support_labels, task_unlabeled)
    return AdaptedTask(classes, method, None if factor is None else method.temperature * factor, checked)


def adapt(
    model: Model,
    classes: list[str],
    support: Tensor,
    support_labels: Tensor,
    unlabeled: Tensor,
    predict_for: Tensor | None = None,
    ssl: SSLOptions | None = None,
) -> Prediction:
    """`fit_task`, then predict `predict_for` (default: the unlabeled images themselves)."""
    task = fit_task(model, classes, support, support_labels, unlabeled, ssl)
    return task.predict(unlabeled if predict_for is None else predict_for)


def fit_sample(count: int, limit: int | None = None) -> np.ndarray:
    """Which of `count` batch images the method adapts to: all up to `limit`, else a fixed
    random `limit` of them (the rest are predicted from that fit). The same on one machine
    and on a cluster, so both write the same CSV."""
    limit = FIT_LIMIT if limit is None else limit
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(0).choice(count, limit, replace=False))


def choose_backbone(
    images: Sequence[Image.Image],
    labels: Tensor,
    method: str,
    folder: Path = MODELS_DIR,
    unlabeled_paths: Sequence[Path] = (),
    cache: EmbeddingCache | None = None,
) -> tuple[str, str]:
    """(image features, reason). Measured on the support set by held-out log loss with
    `method` when every class has two images, the method adapting with a fixed sample of the
    unlabeled images as it will when labeling (embedded through `cache`, so the run that
    follows finds them there); otherwise by the kind of images (`backbone_by_image_kind`).

    The task-centred ImageNet features are the default: another source must beat them by
    `SOURCE_MARGIN` in log loss, since a few held-out images pick the winner noisily."""
    candidates = [b for b in FEATURE_SOURCES if _installed(b, folder)]
    if len(candidates) == 1:
        return candidates[0], "the only image features installed"
    sample = [unlabeled_paths[i] for i in fit_sample(len(unlabeled_paths), HELD_OUT_UNLABELED)]
    if (torch.bincount(labels) < 2).any():
        best, kind = backbone_by_image_kind(images, readable_images(sample))
        why = "a class has one labeled example: too few to measure which does better"
        return best, f"image features {best}: {kind} ({why})"
    scores = {}
    for backbone in candidates:
        model = model_for(method, backbone, folder)
        embedded = embed_files(model.backbone, model.backbone_key, sample, cache, log=lambda _: None)
        unlabeled = torch.from_numpy(embedded.embeddings) if len(embedded.embeddings) else None
        method_copy = copy.deepcopy(model.method)  # the loaded model is shared by app sessions
        support = embed_images(model.backbone, images)
        scores[backbone] = held_out_log_loss(method_copy, support, labels, unlabeled)
    best = pick_source(scores)
    measured = ", ".join(f"{b} {scores[b]:.2f}" for b in candidates)
    return best, (
        f"image features {best}: your labeled examples, each predicted from the others, came "
        f"out best with it (log loss {measured}; lower is better; {candidates[0]} unless another "
        f"is lower by {SOURCE_MARGIN})"
    )


def pick_source(losses: dict[str, float], margin: float = SOURCE_MARGIN) -> str:
    """The feature source with the lowest held-out log loss, where any but the default (the
    first of FEATURE_SOURCES among them) must be lower by `margin`."""
    default = next(s for s in FEATURE_SOURCES if s in losses)
    return min(losses, key=lambda s: losses[s] + (0 if s == default else margin))


def _installed(source: str, folder: Path) -> bool:
    """Whether the checkpoint a feature source needs is shipped in `folder`."""
    needs = "mobilenetv2" if source in CENTRED_SOURCES else source
    return f"{needs}-protonet" in available_models(folder)


def backbone_by_image_kind(images: Sequence[Image.Image], batch: Iterable[Image.Image] = ()) -> tuple[str, str]:
    """(image features, kind of images) where nothing can be measured: small grayscale
    drawings (characters, digits, sketches: what Conv-4 was meta-trained on) go to Conv-4,
    everything else, grayscale photos included, to the task-centred ImageNet features.
    Drawings: the labeled images are small and grayscale, and the median ink purity of them
    and of `batch` (unlabeled images, read only if the labeled ones qualify) is a pen stroke's."""
    small_gray = all(im.mode == "L" and max(im.size) <= SMALL_GRAY_SIDE for im in images)
    if small_gray and np.median([ink_purity(im) for im in (*images, *batch)]) >= DRAWING_INK_PURITY:
        return "conv4", "small grayscale drawings, like the characters it learned from"
    return "imagenet", "photos, or large or colour images"


def ink_purity(image: Image.Image) -> float:
    """Share of an image's foreground pixels (beyond 10% of its background, the dark or the light
    end, whichever the image is mostly near) that are pure ink (within 10% of the other end)."""
    pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255
    if pixels.mean() > 0.5:  # dark ink on a light background
        pixels = 1 - pixels
    foreground = pixels > 0.1
    return float((pixels > 0.9).sum() / max(foreground.sum(), 1))


def readable_images(paths: Iterable[Path]) -> Iterator[Image.Image]:
    """The decoded images of `paths`, skipping those that cannot be read (reported elsewhere)."""
    for path in paths:
        try:
            yield decode_image(path)
        except ImageError:
            continue


def decode_all(paths: Sequence[Path], log: Callable[[str], None]) -> tuple[list, list[str]]:
    """Decoded images (None where unreadable) and the error message per path ('' if fine)."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(decode_image(path))
            errors.append("")
        except ImageError as error:
            images.append(None)
            errors.append(str(error))
            log(f"{path}: {error}")
    return images, errors


@dataclass
class Support:
    """The labeled images of a task, embedded by the model chosen for them."""

    classes: list[str]
    labels: Tensor
    embeddings: Tensor
    model: Model
    reason: str  # why this backbone


def prepare_support(
    support_dir: Path,
    method: str | None = None,
    backbone: str = "auto",
    folder: Path | None = None,
    log: Callable[[str], None] = print,
    unlabeled_paths: Sequence[Path] = (),
    cache: EmbeddingCache | None = None,
) -> Support:
    """Decode the class folders of `support_dir`, choose the backbone (measured with a sample
    of `unlabeled_paths`), embed them."""
    folder = folder or MODELS_DIR
    method = method or default_method(folder)
    support_files = class_folder_files(support_dir)
    support_images, support_errors = decode_all([f.path for f in support_files], log)
    usable = [
        (im, f.label) for im, f, e in zip(support_images, support_files, support_errors, strict=True) if not e
    ]
    classes = sorted({label for _, label in usable})
    if len(classes) < 2:
        raise ValueError(
            f"{support_dir} needs at least two class sub-folders with readable images; found {classes}"
        )
    images = [im for im, _ in usable]
    labels = torch.tensor([classes.index(label) for _, label in usable])
    if backbone == "auto":
        backbone, reason = choose_backbone(images, labels, method, folder, unlabeled_paths, cache)
    else:
        reason = f"image features {backbone}: chosen by the user"
    model = model_for(method, backbone, folder)
    return Support(classes, labels, embed_images(model.backbone, images), model, reason)


def label_folders(
    support_dir: Path,
    unlabeled_dir: Path,
    method: str | None = None,
    backbone: str = "auto",
    folder: Path = MODELS_DIR,
    log: Callable[[str], None] = print,
    ssl: SSLOptions | None = None,
    cache: EmbeddingCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelingResult:
    """Pseudo-label every file under `unlabeled_dir` from the class folders of `support_dir`.

    The batch streams through the network (see bulk.py): memory holds its embeddings, not its
    images. With a `cache`, images embedded before by the same model are not embedded again."""
    started = time.perf_counter()
    unlabeled_paths = list_files(unlabeled_dir)
    task_support = prepare_support(support_dir, method, backbone, folder, log, unlabeled_paths, cache)
    model_seconds = time.perf_counter() - started
    model, classes = task_support.model, task_support.classes
    support, labels, reason = task_support.embeddings, task_support.labels, task_support.reason

    embedded = embed_files(model.backbone, model.backbone_key, unlabeled_paths, cache, log, progress)
    started = time.perf_counter()
    unlabeled = torch.from_numpy(embedded.embeddings)
    prediction = adapt(model, classes, support, labels, unlabeled[fit_sample(len(unlabeled))], unlabeled, ssl)
    seconds = {"model": model_seconds, **embedded.seconds, "adapt": time.perf_counter() - started}
    outcomes = iter(prediction.probabilities)
    rows = [
        prediction_row(str(path.relative_to(unlabeled_dir)), classes, None if error else next(outcomes), error)
        for path, error in zip(unlabeled_paths, embedded.errors, strict=True)
    ]
    return LabelingResult(classes, rows, model.name, reason, seconds)


def prediction_row(
    path: str, classes: list[str], probabilities: np.ndarray | None, error: str = ""
) -> PredictionRow:
    """The CSV row of one file: the most probable class and its probability, or the error."""
    if error:
        return PredictionRow(path, error=error)
    best = int(probabilities.argmax())
    return PredictionRow(path, classes[best], float(probabilities[best]), "", probabilities.tolist())


def write_csv_header(handle: TextIO, classes: list[str]):
    """A CSV writer on `handle` with the header `path,label,confidence,error,p_<class>...`."""
    writer = csv.writer(handle)
    writer.writerow(["path", "label", "confidence", "error", *[f"p_{c}" for c in classes]])
    return writer


def write_csv_row(writer, row: PredictionRow, n_classes: int) -> None:
    confidence = "" if row.confidence is None else f"{row.confidence:.4f}"
    proba = [f"{p:.4f}" for p in row.probabilities] or [""] * n_classes
    writer.writerow([row.path, row.label, confidence, row.error, *proba])


def write_predictions_csv(result: LabelingResult, out: Path) -> None:
    """`path,label,confidence,error,p_<class>...`, one row per unlabeled file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = write_csv_header(handle, result.classes)
        for row in result.rows:
            write_csv_row(writer, row, len(result.classes))
