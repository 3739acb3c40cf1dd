"""The one labeling flow shared by the CLI and the app: decode -> embed -> adapt -> predict.

`choose_model` picks the backbone (measured on the user's own support set where it can be)
and the method (the best measured on validation classes, from the model cards).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import threading
import time
from collections import OrderedDict
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
from mssl_core.calibration import held_out_calibration
from mssl_core.checkpoints import MODELS_DIR, Model, available_models, load_model
from mssl_core.combined_source import ONE_SHOT_FACTORS, Calibration, SourceEnsemble, combined_model
from mssl_core.embedding_cache import EmbeddingCache
from mssl_core.feature_sources import CENTRED_SOURCES, centred_model
from mssl_core.images import ImageError, class_folder_files, decode_image, list_files
from mssl_core.methods import METHODS, make_method
from mssl_core.ssl import SSLOptions, with_ssl

# Image features: "combined" (every other source at once, see combined_source.py) is the
# default; the others are there to be chosen by name.
FEATURE_SOURCES = ("combined", "imagenet", "conv4", "pixels", "mobilenetv2")
FIT_LIMIT = 20_000  # batch images a `label` run adapts to; more add little and cost n^2 time


@dataclass
class Prediction:
    """Adapted predictions for a batch: probabilities over `classes`, label and confidence."""

    classes: list[str]
    probabilities: np.ndarray
    embeddings: np.ndarray
    confidence_checked: bool = False  # the temperature was adjusted on the user's labeled images
    # probabilities of the leading labeled images confidence was calibrated on, each predicted
    # from the others: where a label and its images disagree
    held_out: np.ndarray | None = None

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
    (see feature_sources.py), or for `combined` all of them (combined_source.py). Baselines
    borrow the features of the prototypical checkpoint, since they are not meta-trained themselves."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if backbone == "combined":
        return combined_model(model_for(method, "mobilenetv2", folder), model_for(method, "conv4", folder))
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
    held_out: Tensor | None = None  # see Prediction.held_out

    def probabilities(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            if self.temperature is None:
                return self.method.predict_proba(x)
            return torch.softmax(self.method.logits(x) / self.temperature, dim=1)

    def predict(self, x: Tensor) -> Prediction:
        held_out = None if self.held_out is None else self.held_out.numpy()
        return Prediction(
            self.classes, self.probabilities(x).numpy(), x.numpy(), self.confidence_checked, held_out
        )


def fit_task(
    model: Model,
    classes: list[str],
    support: Tensor,
    support_labels: Tensor,
    unlabeled: Tensor,
    ssl: SSLOptions | None = None,
    labeled_rows: int | None = None,
) -> AdaptedTask:
    """Fit the method to the task (support + unlabeled), with the semi-supervised terms of
    `ssl` switched on.

    Confidence uses the validation temperature of the task's shape; where every class has two
    or more labeled images, times the domain factor measured on them (see calibration.py). The
    combined source calibrates each of its members that way (combined_source.py). Where a class
    has one labeled image, the factor fitted for the source on the development domains.

    In review, `labeled_rows` says how many leading support rows the user labeled; the rest
    were decided in review, picked for being hard, so a calibration measured on them would
    under-promise. Confidence is then calibrated on the labeled rows alone (while every class
    has two there), and that calibration is remembered: a decision costs only the refit."""
    task_unlabeled = unlabeled if len(unlabeled) else None
    calibrate_on = slice(None)
    if (
        labeled_rows is not None
        and (torch.bincount(support_labels[:labeled_rows], minlength=len(classes)) >= 2).all()
    ):
        calibrate_on = slice(0, labeled_rows)
    # A private copy: app sessions run in threads and share one loaded model.
    method = copy.deepcopy(model.method)
    if isinstance(method, SourceEnsemble):
        method.with_ssl(ssl)
        labeled, labels = support[calibrate_on], support_labels[calibrate_on]
        if calibrate_on.stop:  # in review: the labeled rows' calibration, remembered
            key = _calibration_key(model, ssl, labeled, labels)
            calibration = _remembered(key, lambda: method.calibrate(labeled, labels, task_unlabeled))
        else:
            calibration = method.calibrate(labeled, labels, task_unlabeled)
        method.fit(support, support_labels, task_unlabeled, calibration)
        return AdaptedTask(classes, method, method.temperature, method.checked, calibration.held_out)
    method = with_ssl(method, ssl)
    measured = held_out_calibration(method, support[calibrate_on], support_labels[calibrate_on], task_unlabeled)
    with torch.no_grad():
        method.fit(support, support_labels, task_unlabeled)
    if not hasattr(method, "temperature"):
        return AdaptedTask(classes, method, None, False)
    if measured is None:
        return AdaptedTask(classes, method, method.temperature * ONE_SHOT_FACTORS.get(model.backbone.name, 1.0))
    factor, held_out = measured
    return AdaptedTask(classes, method, method.temperature * factor, True, held_out)


REMEMBERED_CALIBRATIONS = 32  # one per (model, labeled set) under review: a few projects at once
_calibrations: OrderedDict[str, Calibration] = OrderedDict()
_calibrations_lock = threading.Lock()  # app sessions run in threads


def _calibration_key(model: Model, ssl: SSLOptions | None, support: Tensor, labels: Tensor) -> str:
    digest = hashlib.sha1(f"{model.fingerprint}:{model.name}:{ssl!r}".encode())
    digest.update(np.ascontiguousarray(support.numpy()).tobytes())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()


def _remembered(key: str, compute: Callable[[], Calibration]) -> Calibration:
    """The calibration remembered under `key`, else `compute`d and remembered (least recently
    used ones forgotten first)."""
    with _calibrations_lock:
        if key in _calibrations:
            _calibrations.move_to_end(key)
            return _calibrations[key]
    calibration = compute()  # outside the lock: seconds, and other sessions go on meanwhile
    with _calibrations_lock:
        _calibrations[key] = calibration
        while len(_calibrations) > REMEMBERED_CALIBRATIONS:
            _calibrations.popitem(last=False)
    return calibration


def adapt(
    model: Model,
    classes: list[str],
    support: Tensor,
    support_labels: Tensor,
    unlabeled: Tensor,
    predict_for: Tensor | None = None,
    ssl: SSLOptions | None = None,
    labeled_rows: int | None = None,
) -> Prediction:
    """`fit_task`, then predict `predict_for` (default: the unlabeled images themselves)."""
    task = fit_task(model, classes, support, support_labels, unlabeled, ssl, labeled_rows)
    return task.predict(unlabeled if predict_for is None else predict_for)


def fit_sample(count: int, limit: int | None = None) -> np.ndarray:
    """Which of `count` batch images the method adapts to: all up to `limit`, else a fixed
    random `limit` of them (the rest are predicted from that fit). The same on one machine
    and on a cluster, so both write the same CSV."""
    limit = FIT_LIMIT if limit is None else limit
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(0).choice(count, limit, replace=False))


def choose_backbone(folder: Path = MODELS_DIR) -> tuple[str, str]:
    """(image features, reason): the combined source where its checkpoints are shipped, else
    the first source that is."""
    candidates = [b for b in FEATURE_SOURCES if _installed(b, folder)]
    if not candidates:
        raise FileNotFoundError(f"no model in {folder} to embed images with")
    if candidates[0] == "combined":
        return "combined", (
            "image features: all of them combined (ImageNet features, the meta-trained head, Conv-4, "
            "raw pixels), each weighted by how well it predicts your labeled examples"
        )
    return candidates[0], f"image features {candidates[0]}: the only ones installed"


def _installed(source: str, folder: Path) -> bool:
    """Whether the checkpoints a feature source needs are shipped in `folder`."""
    needs = {"combined": ("mobilenetv2", "conv4"), "imagenet": ("mobilenetv2",), "pixels": ("mobilenetv2",)}
    shipped = available_models(folder)
    return all(f"{n}-protonet" in shipped for n in needs.get(source, (source,)))


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
        backbone, reason = choose_backbone(folder)
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
