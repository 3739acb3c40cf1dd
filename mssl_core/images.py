"""Safe image decoding and the folder layouts users hand us.

Every failure becomes an `ImageError` whose message says what is wrong with the file in plain
words, so callers can report it by name and go on with the rest.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 100_000_000  # refuse larger images before decoding them (decompression bombs)
MAX_SIDE = 1024  # larger images are downscaled while decoding; no backbone needs more


class ImageError(ValueError):
    """A file that cannot be used as an image; the message is meant for the user."""


@dataclass(frozen=True)
class ImageFile:
    """An image file found in a folder, with the class its folder names (if any)."""

    path: Path
    label: str | None = None


def decode_image(path: Path) -> Image.Image:
    """Decode a file into an 8-bit RGB or L image, EXIF orientation applied, first frame only."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError("the file is empty (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{width} x {height} pixels is larger than the {MAX_PIXELS:,}-pixel limit")
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
                image.load()
                return _normalise(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image in a format we can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("declares too many pixels (possible decompression bomb)") from None
    except OSError as error:
        reason = str(error)
        if "truncated" in reason:
            raise ImageError("the image data is truncated (incomplete file)") from None
        raise ImageError(f"cannot be decoded: {reason}") from None
    except (ValueError, SyntaxError) as error:
        raise ImageError(f"cannot be decoded: {error}") from None


def _normalise(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = np.percentile(pixels, [0.5, 99.5])
        scaled = np.clip((pixels - low) / max(high - low, 1e-9) * 255, 0, 255)
        image = Image.fromarray(scaled.astype(np.uint8))
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        span = max(pixels.max() - pixels.min(), 1e-9)
        image = Image.fromarray(((pixels - pixels.min()) / span * 255).astype(np.uint8))
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


def _is_ignored(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def list_files(folder: Path) -> list[Path]:
    """Every regular file under `folder`, sorted, skipping hidden files and `__MACOSX`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and not _is_ignored(p, folder))


def class_folder_files(folder: Path) -> list[ImageFile]:
    """The class-folder layout: `folder/<class>/<image>`; files directly in `folder` are skipped."""
    files = []
    for path in list_files(folder):
        relative = path.relative_to(folder)
        if len(relative.parts) >= 2:
            files.append(ImageFile(path, relative.parts[0]))
    return files
