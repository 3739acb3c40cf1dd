"""Self-supervised meta-training tasks built from unlabeled photos (UMTRA, Khodadadeh et al. 2019).

Each pseudo-class is one region of a photo; its images are augmented views of that region
(a random sub-crop, a flip, brightness and contrast, grey in half of them, since many users'
images are grey). Tasks drawn from these pools teach the head and the method what "the same
kind of photo" looks like, where the rendered characters only teach pen strokes.

The photos ship inside registry packages and belong to no benchmark domain: scikit-learn's two
sample photos (always installed) and scikit-image's natural photos (installed for the benchmark
by scripts/install_domains.sh). Left out on purpose: scikit-image's brick, grass and gravel
(a test domain), its microscopy images (a development domain) and its horse silhouette (too
close to the animal-silhouettes test domain).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from mssl_core.engine.data.domains import python_packages

VERSION = 1  # bump when the views change: cached features are keyed by it
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "moon.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "page.png",
    "text.png",
    "clock_motion.png",
    "phantom.png",
)


def photo_paths() -> list[Path]:
    """The photos that are installed here, in a fixed order."""
    import sklearn

    sample = Path(sklearn.__file__).parent / "datasets" / "images"
    paths = [sample / "china.jpg", sample / "flower.jpg"]
    skimage_data = python_packages() / "skimage" / "data"
    paths += [skimage_data / name for name in SKIMAGE_PHOTOS if (skimage_data / name).exists()]
    return paths


def _view(region: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """One augmented view of a region: sub-crop of 50-100% of its side, flip, light and grey."""
    side = region.width
    crop = int(side * rng.uniform(0.5, 1.0))
    left, top = rng.integers(0, side - crop + 1, size=2)
    view = region.crop((left, top, left + crop, top + crop)).resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.75, 1.25))
    view = ImageEnhance.Contrast(view).enhance(rng.uniform(0.75, 1.25))
    if rng.random() < 0.5:
        view = view.convert("L").convert("RGB")
    return np.asarray(view)


def photo_task_pool(regions_per_photo: int = 24, views: int = 16, size: int = 96, seed: int = 0) -> np.ndarray:
    """Augmented views laid out `(pseudo-classes, views, size, size, 3)` uint8: each pseudo-class
    a random square region (15-40% of the photo's shorter side) of one photo."""
    rng = np.random.default_rng(seed)
    classes = []
    for path in photo_paths():
        photo = Image.open(path).convert("RGB")
        short = min(photo.size)
        for _ in range(regions_per_photo):
            side = int(short * rng.uniform(0.15, 0.4))
            left = rng.integers(0, photo.width - side + 1)
            top = rng.integers(0, photo.height - side + 1)
            region = photo.crop((left, top, left + side, top + side))
            classes.append(np.stack([_view(region, rng, size) for _ in range(views)]))
    return np.stack(classes)
