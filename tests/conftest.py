"""Shared fixtures: tiny generated image folders and tiny (untrained) checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mssl_core.engine.backbones import make_backbone
from mssl_core.engine.checkpoints import Model, save_model
from mssl_core.engine.methods import make_method

SHAPES = ("circle", "square", "cross")


def draw_shape(shape: str, rng: np.random.Generator, size: int = 28) -> Image.Image:
    """A white shape on black with random position and size: three easily separable classes."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    r = rng.uniform(6, 9)
    cx, cy = rng.uniform(11, 17, size=2)
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, outline=255, width=2)
    elif shape == "square":
        draw.rectangle(box, outline=255, width=2)
    else:
        draw.line([cx - r, cy - r, cx + r, cy + r], fill=255, width=2)
        draw.line([cx - r, cy + r, cx + r, cy - r], fill=255, width=2)
    return image


def gaussian_task(
    ways: int = 3, shots: int = 2, unlabeled_per_class: int = 10, seed: int = 0, spread: float = 10
):
    """A tiny few-shot task in 8-d: class centres `spread` apart, unit noise. Returns centres,
    support, support labels, unlabeled images and their (hidden) labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(ways, 8, generator=generator) * spread
    support_labels = torch.arange(ways).repeat_interleave(shots)
    support = centres[support_labels] + torch.randn(len(support_labels), 8, generator=generator)
    unlabeled_labels = torch.arange(ways).repeat_interleave(unlabeled_per_class)
    unlabeled = centres[unlabeled_labels] + torch.randn(len(unlabeled_labels), 8, generator=generator)
    return centres, support, support_labels, unlabeled, unlabeled_labels


@pytest.fixture
def shape_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """support/<shape>/*.png (3 per class), unlabeled/*.png (5 per class) plus one corrupt file;
    returns the two folders and the true label of each unlabeled file."""
    rng = np.random.default_rng(0)
    support, unlabeled = tmp_path / "support", tmp_path / "unlabeled"
    truth = {}
    for shape in SHAPES:
        (support / shape).mkdir(parents=True)
        for i in range(3):
            draw_shape(shape, rng).save(support / shape / f"{i}.png")
    unlabeled.mkdir()
    for shape in SHAPES:
        for i in range(5):
            name = f"{shape}_{i}.png"
            draw_shape(shape, rng).save(unlabeled / name)
            truth[name] = shape
    (unlabeled / "broken.png").write_bytes(b"this is not a png")
    return support, unlabeled, truth


@pytest.fixture
def tiny_models(tmp_path: Path) -> Path:
    """Untrained Conv-4 checkpoints (prototypical and soft k-means) in a temporary models folder."""
    folder = tmp_path / "models"
    torch.manual_seed(0)
    backbone = make_backbone("conv4").eval()
    for method in ("protonet", "softkmeans"):
        card = {"method": method, "validation": {"x": {"accuracy": 0.5}}}
        save_model(Model(f"conv4-{method}", backbone, make_method(method), card), folder)
    return folder


@pytest.fixture
def both_backbones(tiny_models: Path) -> Path:
    """The tiny models folder with an (untrained) MobileNetV2 checkpoint beside the Conv-4 ones."""
    save_model(
        Model("mobilenetv2-protonet", make_backbone("mobilenetv2"), make_method("protonet")), tiny_models
    )
    return tiny_models


@pytest.fixture
def refuse_outbound(tmp_path, monkeypatch):
    """Every connection off the machine is refused and logged; the test fails if one was tried."""
    from network_guard.sitecustomize import install

    log = tmp_path / "network.log"
    install(str(log), monkeypatch.setattr)
    yield
    assert not log.exists(), f"something tried to connect off the machine: {log.read_text()}"


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path, monkeypatch):
    """Projects and the embedding cache of every test live in its own folder, not ./data."""
    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path / "data"))
