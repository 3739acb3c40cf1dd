"""A meta-trained model = backbone + method (+ fitted temperature), saved as `NAME.pt` with a
JSON model card `NAME.json` beside it in `mssl_core/assets/models/`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mssl_core.engine.backbones import Backbone, make_backbone
from mssl_core.engine.data.paths import MODELS_DIR
from mssl_core.engine.methods import make_method


@dataclass
class Model:
    """What the app and the CLI run: a backbone that embeds and a method that adapts."""

    name: str
    backbone: Backbone
    method: torch.nn.Module
    card: dict = field(default_factory=dict)
    fingerprint: str = ""  # hash of the checkpoint file: keys the embedding cache

    @property
    def backbone_key(self) -> str:
        """Identifies the embeddings this model's backbone produces."""
        return f"{self.backbone.name}:{self.fingerprint}"


def save_model(model: Model, folder: Path = MODELS_DIR) -> Path:
    """Write `NAME.pt` (trainable weights only) and the model card `NAME.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model.name}.pt"
    torch.save(
        {
            "backbone": model.backbone.name,
            "backbone_state": model.backbone.trainable_state(),
            "method": model.method.name,
            "embedding_dim": model.backbone.embedding_dim,
            "method_state": model.method.state_dict(),
        },
        path,
    )
    save_card(model.name, model.card, folder)
    return path


def load_model(name_or_path: str | Path, folder: Path = MODELS_DIR) -> Model:
    """Load a shipped model by name (`conv4-softkmeans`) or by the path of its `.pt` file."""
    path = Path(name_or_path)
    if path.suffix != ".pt":
        path = folder / f"{name_or_path}.pt"
    if not path.exists():
        available = sorted(p.stem for p in folder.glob("*.pt"))
        raise FileNotFoundError(f"no model {path}; available: {available}")
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    stored = torch.load(path, weights_only=True)
    backbone = make_backbone(stored["backbone"])
    backbone.load_trainable_state(stored["backbone_state"])
    method = make_method(stored["method"], embedding_dim=stored.get("embedding_dim"))
    method.load_state_dict(stored["method_state"])
    card = load_card(path.stem, path.parent)
    return Model(path.stem, backbone.eval(), method.eval(), card, fingerprint)


def available_models(folder: Path = MODELS_DIR) -> list[str]:
    """Names of the shipped models."""
    return sorted(p.stem for p in folder.glob("*.pt"))


def save_card(name: str, card: dict, folder: Path = MODELS_DIR) -> None:
    """Write the model card `NAME.json` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(card, indent=2, ensure_ascii=False))


def load_card(name: str, folder: Path = MODELS_DIR) -> dict:
    """The JSON model card of a shipped model ({} if it has none)."""
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}
