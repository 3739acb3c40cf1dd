"""Adapting a model to one labeling task: choose the image features and model, fit, predict.

`choose_model` picks the backbone (measured on the user's own support set where it can be)
and the method (the best measured on validation classes, from the model cards).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mssl_core.engine.calibration import HeldOut, held_out_calibration
from mssl_core.engine.checkpoints import MODELS_DIR, Model, available_models, load_model
from mssl_core.engine.combined_source import (
    SINGLE_SOURCE_ONE_SHOT_FACTORS,
    Calibration,
    SourceEnsemble,
    combined_model,
)
from mssl_core.engine.feature_sources import CENTRED_SOURCES, centre_on, centred_model
from mssl_core.engine.methods import METHODS, make_method
from mssl_core.engine.ssl import SSLOptions, with_ssl

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
    # the leading labeled images confidence was calibrated on, each predicted from the others
    labeled_held_out: HeldOut | None = None
    # in review: `probabilities` corrected by the person's decisions (project/review.py,
    # `review_factor`); these are the model's before that correction (None: not corrected)
    model_probabilities: np.ndarray | None = None
    review_factor: float = 1.0
    reviewed: int = 0  # the decisions `review_factor` was fitted on
    # each class's share of the batch, estimated from the predictions, where it clearly differs
    # from equal shares and the probabilities take it into account (class_shares.py); else None
    batch_shares: np.ndarray | None = None

    @property
    def before_review(self) -> np.ndarray:
        """The probabilities calibrated on the labeled images alone."""
        return self.probabilities if self.model_probabilities is None else self.model_probabilities

    @property
    def held_out(self) -> np.ndarray | None:
        """Each of those labeled images' probabilities, calibrated without it: where a label and
        its image disagree (`HeldOut.cross_fitted`)."""
        return None if self.labeled_held_out is None else self.labeled_held_out.cross_fitted.numpy()

    # computed once (a pass over the batch each): pages read them per image; a changed prediction
    # is a new one (`dataclasses.replace`), never `probabilities` changed in place
    @cached_property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(1)]

    @cached_property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(1)


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
    if METHODS[method].meta_trained:
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
    held_out: HeldOut | None = None  # see Prediction.labeled_held_out

    def probabilities(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            if self.temperature is None:
                return self.method.predict_proba(x)
            return torch.softmax(self.method.logits(x) / self.temperature, dim=1)

    def predict(self, x: Tensor) -> Prediction:
        log_ratios = (
            self.method.calibration.batch_log_ratios if isinstance(self.method, SourceEnsemble) else None
        )
        return Prediction(
            self.classes,
            self.probabilities(x).numpy(),
            x.numpy(),
            self.confidence_checked,
            self.held_out,
            batch_shares=None if log_ratios is None else log_ratios.exp().numpy() / len(self.classes),
        )


def fit_task(
    model: Model,
    classes: list[str],
    support: Tensor,
    support_labels: Tensor,
    unlabeled: Tensor,
    ssl: SSLOptions | None = None,
    labeled_rows: int | None = None,
    earlier: AdaptedTask | None = None,
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
    has two there), and that calibration is remembered: a decision costs only the refit.

    `earlier`: this task fitted before a few more labeled images came (Label Studio annotations,
    same classes): its tuned last stage is kept until the labeled set has grown by half since
    it was tuned (RETUNE_GROWTH), so a new label costs the calibration and the refit only."""
    task_unlabeled = unlabeled if len(unlabeled) else None
    calibrate_on = slice(None)
    if (
        labeled_rows is not None
        and (torch.bincount(support_labels[:labeled_rows], minlength=len(classes)) >= 2).all()
    ):
        calibrate_on = slice(0, labeled_rows)
    # A private copy: app sessions run in threads and share one loaded model.
    method = copy.deepcopy(model.method)
    # centred on the user's labeled images: the review's decisions leave every image's features as they were
    centre_on(method, labeled_rows)
    if isinstance(method, SourceEnsemble):
        method.with_ssl(ssl)
        labeled, labels = support[calibrate_on], support_labels[calibrate_on]
        if not calibrate_on.stop:
            calibration = None
            if kept := _kept_tuning(earlier, classes, len(support)):
                calibration = method.calibrate(labeled, labels, task_unlabeled).with_tuning_of(kept)
            method.fit(support, support_labels, task_unlabeled, calibration)
        else:  # in review: the labeled rows' calibration, tuned last stage and batch shares, remembered
            # per batch (its size: constant through a review, changed by an upload)
            key = _calibration_key(model, ssl, labeled, labels, len(support) - labeled_rows + len(unlabeled))
            calibration = _recalled(key)
            if calibration is not None and len(support) > labeled_rows:
                # a person has decided some of the batch: no self-training (SourceEnsemble.fit)
                method.fit(support, support_labels, task_unlabeled, calibration, refit_only=True)
            else:
                calibration = calibration or method.calibrate(labeled, labels, task_unlabeled)
                method.fit(support, support_labels, task_unlabeled, calibration)
                _remember(key, method.calibration)
        return AdaptedTask(classes, method, method.temperature, method.checked, method.calibration.held_out)
    method = with_ssl(method, ssl)
    measured = held_out_calibration(method, support[calibrate_on], support_labels[calibrate_on], task_unlabeled)
    with torch.no_grad():
        method.fit(support, support_labels, task_unlabeled)
    if method.temperature is None:
        return AdaptedTask(classes, method, None, False)
    if measured is None:
        return AdaptedTask(
            classes, method, method.temperature * SINGLE_SOURCE_ONE_SHOT_FACTORS.get(model.backbone.name, 1.0)
        )
    factor, held_out = measured
    return AdaptedTask(classes, method, method.temperature * factor, True, held_out)


RETUNE_GROWTH = 1.5  # the last stage is tuned again once the labeled set is this much larger


def _kept_tuning(earlier: AdaptedTask | None, classes: list[str], labeled: int) -> Calibration | None:
    """The earlier fit's calibration, where its tuned last stage may serve `labeled` images."""
    if earlier is None or earlier.classes != classes or not isinstance(earlier.method, SourceEnsemble):
        return None
    calibration = earlier.method.calibration
    if calibration.tuned_block is None or labeled >= RETUNE_GROWTH * calibration.tuned_on:
        return None
    return calibration


REMEMBERED_CALIBRATIONS = 32  # one per (model, labeled set) under review: a few projects at once
_calibrations: OrderedDict[str, Calibration] = OrderedDict()
_calibrations_lock = threading.Lock()  # app sessions run in threads


def _calibration_key(
    model: Model, ssl: SSLOptions | None, support: Tensor, labels: Tensor, batch_images: int
) -> str:
    digest = hashlib.sha1(f"{model.fingerprint}:{model.name}:{ssl!r}:{batch_images}".encode())
    digest.update(np.ascontiguousarray(support.numpy()).tobytes())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()


def _recalled(key: str) -> Calibration | None:
    """The calibration remembered under `key`, if any."""
    with _calibrations_lock:
        if key in _calibrations:
            _calibrations.move_to_end(key)
            return _calibrations[key]
    return None


def _remember(key: str, calibration: Calibration) -> None:
    """Remember `calibration` under `key` (least recently used ones forgotten first)."""
    with _calibrations_lock:
        _calibrations[key] = calibration
        while len(_calibrations) > REMEMBERED_CALIBRATIONS:
            _calibrations.popitem(last=False)


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
            "image features: all of them combined (two ImageNet networks, the meta-trained head, Conv-4, "
            "raw pixels), each weighted by how well it predicts your labeled examples"
        )
    return candidates[0], f"image features {candidates[0]}: the only ones installed"


def _installed(source: str, folder: Path) -> bool:
    """Whether the checkpoints a feature source needs are shipped in `folder`."""
    needs = {"combined": ("mobilenetv2", "conv4"), "imagenet": ("mobilenetv2",), "pixels": ("mobilenetv2",)}
    shipped = available_models(folder)
    return all(f"{n}-protonet" in shipped for n in needs.get(source, (source,)))
