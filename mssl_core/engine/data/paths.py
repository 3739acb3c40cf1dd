"""Where offline corpora and caches live; every location can be moved by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2]
ASSETS_DIR = PACKAGE_DIR / "assets"  # shipped inside the package: models, demo images, icon
MODELS_DIR = ASSETS_DIR / "models"  # the meta-trained checkpoints and their model cards
# A source checkout keeps its data, caches and docs beside the package; an installed package
# keeps them in the directory it is run from.
REPO_ROOT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").exists() else Path.cwd()


def npm_modules_dir() -> Path:
    """The node_modules folder that `scripts/setup.sh` fills with the npm data packages."""
    return Path(os.environ.get("MSSL_NPM_DIR", REPO_ROOT / ".cache" / "npm" / "node_modules"))


def cache_dir() -> Path:
    """Rendered corpora and cached features (recomputable, never shipped)."""
    path = Path(os.environ.get("MSSL_CACHE_DIR", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


FASHION_MNIST_DIR = Path(os.environ.get("MSSL_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
