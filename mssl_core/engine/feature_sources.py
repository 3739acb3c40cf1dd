"""Feature sources without a meta-trained head, centred on each task's own images.

A head meta-trained on characters can cost accuracy on images unlike them (chest films, slides,
textures); plain ImageNet features, or even raw pixels, centred on the task's images and
L2-normalised (SimpleShot, Wang et al. 2019), are the baseline it must beat. These sources
feed the same meta-trained method as the MobileNetV2 head does, so the per-task choice
(`labeling.choose_backbone`) can compare them by held-out log loss on the user's own labeled
images and never do worse than no head where it can measure.

- `imagenet`: average-pooled activations of four MobileNetV2 stages (mid-level texture to
  object-level features; mid-level ones transfer better to far domains, Tseng et al. 2020's
  CDFSL observations), each square-rooted (the power transform of Hu et al. 2021, which makes
  ReLU features closer to Gaussian), centred on the task and L2-normalised, then joined.
- `pixels`: the 28x28 grayscale pixels, centred on the task and L2-normalised.

The centre is the middle of the classes, the mean of the labeled images' class means, not the
mean of every image of the task: where most of a batch is one class, that mean sits on the
class, and normalising then scatters its images in every direction, some towards a rare class
(docs/crossdomain.md, "Batches where one class is rare").

Either is mapped into the method's embedding space by a fixed random orthogonal projection at
the scale the MobileNetV2 head learned, so the meta-trained method (and its temperature table)
applies as it is; the per-task domain factor (calibration.py) corrects confidence from there.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from mssl_core.engine import row_sets
from mssl_core.engine.backbones import MobileNetV2Backbone, PixelBackbone
from mssl_core.engine.checkpoints import Model
from mssl_core.engine.contract import Method, MethodWrapper
from mssl_core.engine.row_sets import RowSetMemory, row_fingerprints, to_old_order

IMAGENET_STAGES = (13, 16, 17, 18)  # MobileNetV2 `features` blocks whose pooled outputs are used
IMAGENET_STAGE_DIMS = (96, 160, 320, 1280)
PROJECTION_SEED = 1
# task-centred features of the last batches: one set per centred member of the combined source
# (six), two batches (row_sets.py: a decision in review refits on the same images)
_centred_tasks = RowSetMemory(12)


class ImageNetStages(MobileNetV2Backbone):
    """Frozen ImageNet MobileNetV2, pooled at several stages and joined (1,856-d); no head."""

    name = "imagenet"
    onnx_stem = "mobilenetv2-stages"

    def __init__(self, image_size: int = 224):
        super().__init__(image_size)
        self.head = None
        self.embedding_dim = sum(IMAGENET_STAGE_DIMS)

    def _torch_features(self, x: Tensor) -> Tensor:
        x = self.normalised(x).contiguous(memory_format=torch.channels_last)
        pooled = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in IMAGENET_STAGES:
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.frozen_features(x).clone()

    def trainable_state(self) -> dict[str, Tensor]:
        return {}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        """Nothing is trained: the ImageNet weights come from their package."""


def orthogonal_projection(in_dim: int, out_dim: int, seed: int = PROJECTION_SEED) -> Tensor:
    """A fixed random `in_dim` x `out_dim` map with orthonormal columns, scaled to keep norms
    (Johnson-Lindenstrauss: distances between images are kept)."""
    generator = torch.Generator().manual_seed(seed)
    orthogonal, _ = torch.linalg.qr(torch.randn(in_dim, out_dim, generator=generator))
    return orthogonal * (in_dim / out_dim) ** 0.5


class TaskCentred(MethodWrapper):
    """A method applied to features centred on the task.

    `fit` takes the centre of the task, the mean of its labeled images' class means; every
    image (those it fits on and any it predicts later) is then transformed the same way: per
    block of features an optional power transform, minus the centre, L2 normalisation; the
    blocks joined, normalised again and projected into the method's embedding space at `scale`.
    """

    def __init__(
        self, method: Method, blocks: tuple[int, ...], power: float | None, out_dim: int, scale: float
    ):
        super().__init__(method)
        self.blocks, self.power, self.scale = blocks, power, scale
        self.projection = orthogonal_projection(sum(blocks), out_dim)
        self.mean: Tensor | None = None
        # the leading support rows that place the centre (None: all): in review, the images the
        # user labeled, so that a decision leaves the centre, and every image's features, as
        # they were (`centre_on`)
        self.centre_rows: int | None = None
        # the task's images as `fit` took them (labeled, then unlabeled), their features and
        # fingerprints (None for a small task), for the prediction that follows the fit (the
        # review step predicts the very rows it adapted to; self-training, the batch alone, in
        # another order); let go then, so an adapted task that is kept holds no copy of its images
        self.task: tuple[tuple[Tensor, ...], Tensor, np.ndarray | None] | None = None

    def _powered(self, x: Tensor) -> Tensor:
        if self.power is None:
            return x
        # sqrt is several times faster than pow(0.5) on 2 cores (re-adapting 10,000 images)
        return x.clamp_min(0).sqrt() if self.power == 0.5 else x.clamp_min(0).pow(self.power)

    def transform(self, x: Tensor) -> Tensor:
        """Features of `x` centred on the fitted task, normalised and projected."""
        task, self.task = self.task, None
        if task is not None:
            parts, mapped, fingerprints = task
            if is_stacked(x, parts):
                return mapped
            if fingerprints is not None and len(x) >= row_sets.SMALLEST:
                rows, found = row_sets.rows_among(row_fingerprints(x), fingerprints)
                if len(rows) == len(x):  # every row one the fit mapped
                    return mapped[torch.from_numpy(found)]
        return self._mapped(self._powered(x.float()))

    def _mapped(self, powered: Tensor) -> Tensor:
        if self.mean is None:
            raise RuntimeError(f"{self.name}: call fit() before predicting")
        pieces = powered.sub(self.mean).split(list(self.blocks), dim=1)
        joined = torch.cat([nn.functional.normalize(p, dim=1) for p in pieces], dim=1)
        return self.scale * nn.functional.normalize(joined, dim=1) @ self.projection

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> TaskCentred:
        parts = (support,) if unlabeled is None else (support, unlabeled)
        centred_on = len(support) if self.centre_rows is None else min(self.centre_rows, len(support))
        mapped, fingerprints = self._task_features(parts, support_labels[:centred_on])
        self.task = (parts, mapped, fingerprints)
        mapped_unlabeled = None if unlabeled is None else mapped[len(support) :]
        self.method.fit(mapped[: len(support)], support_labels, mapped_unlabeled)
        return self

    def _task_features(
        self, parts: tuple[Tensor, ...], centre_labels: Tensor
    ) -> tuple[Tensor, np.ndarray | None]:
        """The task's images (`parts` stacked) centred on the middle of the classes of the
        leading `len(centre_labels)` rows (which this sets), normalised and projected;
        remembered for the same images in another order, as in review, where computing them
        again took most of a re-adaptation at 10,000 images. With the rows' fingerprints, where
        the task is large enough to remember."""
        fingerprints, tag = None, None
        if sum(map(len, parts)) >= row_sets.SMALLEST and not any(p.requires_grad for p in parts):
            # part by part: joining them first would copy the batch only to recognise it
            fingerprints = np.concatenate([row_fingerprints(p) for p in parts])
            # the centre's rows lead the support: their fingerprints lead these
            tag = f"{self._tag}:{_labeled_rows_key(fingerprints[: len(centre_labels)], centre_labels)}"
            found = _centred_tasks.get(tag, fingerprints)
            if found is not None:
                self.mean, mapped, computed_order = found
                return mapped[torch.from_numpy(to_old_order(computed_order, fingerprints))], fingerprints
        powered = self._powered(torch.cat(parts).float())
        self.mean = class_centre(powered[: len(centre_labels)], centre_labels)
        # one call for all of them: matrix products round a row differently in a batch of
        # another size, and a corrected image must keep its exact features (see `class_centre`)
        mapped = self._mapped(powered)
        if tag is not None:
            _centred_tasks.put(tag, fingerprints, (self.mean, mapped, fingerprints))
        return mapped, fingerprints

    @property
    def _tag(self) -> str:
        """What identifies the transform (the projection follows from its shape and seed)."""
        return f"{self.blocks}:{self.power}:{self.scale!r}:{tuple(self.projection.shape)}:{PROJECTION_SEED}"

    def logits(self, x: Tensor) -> Tensor:
        return self.method.logits(self.transform(x))

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.method.predict_proba(self.transform(x))


def class_centre(rows: Tensor, labels: Tensor) -> Tensor:
    """The mean of the class means of `rows` (`1 x dim`): each class weighs the same however
    many rows it has. Summed in double precision, so the same rows in another order give
    bitwise the same centre (propagation then finds its remembered neighbour lists)."""
    rows = rows.double()
    means = [rows[labels == c].mean(0) for c in labels.unique()]
    return torch.stack(means).mean(0, keepdim=True).float()


def _labeled_rows_key(fingerprints: np.ndarray, labels: Tensor) -> str:
    """What identifies a set of labeled rows with their labels, in any order."""
    salted = fingerprints + labels.numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return hashlib.sha1(np.sort(salted).tobytes()).hexdigest()[:16]


def centre_on(method: object, rows: int | None) -> None:
    """Centre every task-centred part of `method` (through wrappers and an ensemble's members)
    on the leading `rows` support rows of its next fits (None: all of them)."""
    for part in _task_centred_parts(method):
        part.centre_rows = rows


@contextmanager
def centred_on_leading(method: object, rows: int) -> Iterator[None]:
    """Within the block, every task-centred part of `method` centres on at most the leading
    `rows` support rows (fewer where it already centres on fewer); as before afterwards."""
    parts = list(_task_centred_parts(method))
    kept = [part.centre_rows for part in parts]
    for part in parts:
        part.centre_rows = rows if part.centre_rows is None else min(part.centre_rows, rows)
    try:
        yield
    finally:
        for part, centre_rows in zip(parts, kept, strict=True):
            part.centre_rows = centre_rows


def _task_centred_parts(method: object) -> Iterator[TaskCentred]:
    """The task-centred parts of `method`, through wrappers and an ensemble's members."""
    if isinstance(method, TaskCentred):
        yield method
    for inner in [getattr(method, "method", None), *getattr(method, "members", {}).values()]:
        if inner is not None:
            yield from _task_centred_parts(inner)


def is_stacked(x: Tensor, parts: tuple[Tensor, ...]) -> bool:
    """Whether `x` is exactly `parts` one after the other: views of the same memory where they
    sit (as the review step passes them: no comparison needed), else compared."""
    if len(x) != sum(map(len, parts)) or any(x.shape[1:] != p.shape[1:] for p in parts):
        return False
    starts = np.cumsum([0, *map(len, parts)])
    return all(
        _same_view(x[a:b], p) or torch.equal(x[a:b], p)
        for a, b, p in zip(starts[:-1], starts[1:], parts, strict=True)
    )


def _same_view(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are the same elements of the same memory."""
    return (
        a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        and a.storage_offset() == b.storage_offset()
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.dtype == b.dtype
    )


CENTRED_SOURCES = ("imagenet", "pixels")


def centred_method(base: Model, blocks: tuple[int, ...], power: float | None) -> TaskCentred:
    """`base`'s method (a MobileNetV2 checkpoint's) on task-centred features of `blocks`."""
    head = base.backbone.head
    return TaskCentred(
        copy.deepcopy(base.method), blocks, power, head.projection.shape[1], head.log_scale.exp().item()
    )


def centred_model(base: Model, source: str) -> Model:
    """`base`'s method (a MobileNetV2 checkpoint's) on the task-centred headless `source`."""
    if source == "imagenet":
        backbone, blocks, power = ImageNetStages(), IMAGENET_STAGE_DIMS, 0.5
    else:
        backbone = PixelBackbone()
        blocks, power = (backbone.embedding_dim,), None
    # the features depend on the source alone, so every method shares their cached embeddings
    return Model(
        f"{source}+{base.name}",
        backbone.eval(),
        centred_method(base, blocks, power),
        base.card,
        fingerprint="centred-v1",
    )
