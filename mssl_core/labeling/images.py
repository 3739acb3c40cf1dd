"""Safe image decoding and the folder layouts users hand us.

Every failure becomes an `ImageError` whose message says what is wrong with the file in plain
words, so callers can report it by name and go on with the rest.
"""

from __future__ import annotations

import base64
import csv
import io
import shutil
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mssl_core.labeling.dicom import DicomError, decode_dicom, is_dicom

CHUNK = 1024 * 1024  # files are copied and hashed in pieces of this size, never read whole

MAX_PIXELS = 100_000_000  # refuse larger images before decoding them (decompression bombs)
MAX_SIDE = 1024  # larger images are downscaled while decoding; no backbone needs more


class ImageError(ValueError):
    """A file that cannot be used as an image; the message is meant for the user."""


@dataclass(frozen=True)
class ImageFile:
    """An image file found in a folder, with the class its folder names (if any)."""

    path: Path
    label: str | None = None


def decode_image(source: Path | bytes) -> Image.Image:
    """Decode a file (path or bytes) into an 8-bit RGB or L image, EXIF orientation applied,
    first frame only."""
    try:
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        if size == 0:
            raise ImageError("the file is empty (0 bytes)")
        head = source[:SNIFF_BYTES] if isinstance(source, bytes) else _read_head(Path(source))
        if is_dicom(head):
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            return normalise_image(decode_dicom(data, MAX_PIXELS))
        opened = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{width} x {height} pixels is larger than the {MAX_PIXELS:,}-pixel limit")
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
                image.load()
                return normalise_image(image)
    except ImageError:
        raise
    except DicomError as error:
        raise ImageError(str(error)) from None
    except UnidentifiedImageError:
        raise ImageError(_what_it_is_instead(head)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("declares too many pixels (possible decompression bomb)") from None
    except OSError as error:
        reason = str(error)
        if "truncated" in reason.lower():
            raise ImageError("the image data is truncated (incomplete file)") from None
        raise ImageError(f"cannot be decoded: {reason}") from None
    except (ValueError, SyntaxError) as error:
        raise ImageError(f"cannot be decoded: {error}") from None


SNIFF_BYTES = 2048


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(SNIFF_BYTES)


def _what_it_is_instead(head: bytes) -> str:
    """Why a file Pillow cannot open is not an image, as specifically as the first bytes tell."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG vector drawing, not a pixel image; export it as PNG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page, not an image"
    if text.startswith(b"%pdf"):
        return "a PDF document, not an image"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "a text file, not an image"
        except UnicodeDecodeError:
            pass
    return "not an image in a format we can read"


def thumbnail_data_uri(path: Path, side: int = 96) -> str:
    """A small PNG of an image as a `data:` URI, for tooltips that show the image itself."""
    image = decode_image(path)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def normalise_image(image: Image.Image) -> Image.Image:
    """Upright, 8-bit grayscale or RGB, transparency on white: what every backbone is given."""
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


# Per zip: members, bytes once unpacked (to disk, never to memory), and the largest believable
# compression ratio of one member (a higher one is a zip bomb).
ARCHIVE_LIMITS = {"members": 50_000, "total_bytes": 4 * 1024**3, "ratio": 200}


@dataclass(frozen=True)
class UploadedFile:
    """An uploaded image (possibly from inside a zip): its bytes, or the file on disk holding
    them; `label` from its class folder, if any."""

    name: str
    content: bytes | Path
    label: str | None = None


class _Unreadable(Exception):
    """A zip member that cannot be read: damaged, encrypted, an unknown compression, or more
    bytes than its header declares."""


_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


def expand_uploads(
    items: list[tuple[str, BinaryIO]], folder: Path
) -> tuple[list[UploadedFile], list[tuple[str, str]]]:
    """Uploaded files and zips (name, readable stream) -> image files on disk in `folder`
    (labelled by their parent folder inside a zip) and (name, problem) for everything skipped.
    Each upload is copied to `folder` in chunks; a zip is read from there and its members are
    unpacked one at a time, each under a numbered name (never a path taken from the zip)."""
    files: list[UploadedFile] = []
    problems: list[tuple[str, str]] = []
    for number, (name, stream) in enumerate(items):
        copy = folder / f"upload-{number}"
        stream.seek(0)  # an upload read before (on an earlier rerun of the page) starts over
        with copy.open("wb") as handle:
            shutil.copyfileobj(stream, handle, CHUNK)
        if name.lower().endswith(".zip"):
            files += _unpack(name, copy, problems)
        else:
            files.append(UploadedFile(Path(name).name, copy))
    return files, problems


def _unpack(name: str, archive_path: Path, problems: list[tuple[str, str]]) -> list[UploadedFile]:
    """The image members of the zip at `archive_path`, each unpacked beside it; what cannot be
    used goes to `problems`."""
    try:
        archive = zipfile.ZipFile(archive_path)
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        problems.append((name, "not a readable zip archive"))
        return []
    files = []
    with archive:
        if not members:
            problems.append((name, "the archive holds no files"))
            return []
        if len(members) > ARCHIVE_LIMITS["members"]:
            problems.append((name, f"more than {ARCHIVE_LIMITS['members']:,} files in the archive"))
            return []
        if sum(m.file_size for m in members) > ARCHIVE_LIMITS["total_bytes"]:
            problems.append(
                (name, f"the archive unpacks to more than {ARCHIVE_LIMITS['total_bytes'] / 1024**3:g} GB")
            )
            return []
        for number, member in enumerate(members):
            parts = Path(member.filename).parts
            shown = f"{name}/{member.filename}"
            if not parts:  # a member named "." or "./"
                problems.append((shown, "has no file name inside the archive; skipped"))
            elif member.filename.startswith(("/", "\\")) or ".." in parts:
                problems.append((shown, "unsafe path inside the archive (absolute or '..'); skipped"))
            elif any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue  # hidden files and macOS resource forks are not images
            elif member.file_size > ARCHIVE_LIMITS["ratio"] * max(member.compress_size, 1):
                problems.append((shown, "suspicious compression ratio (possible zip bomb); skipped"))
            elif member.filename.lower().endswith(".zip"):
                problems.append((shown, "archives inside archives are not opened; upload it separately"))
            else:
                target = archive_path.with_name(f"{archive_path.name}-{number}")
                try:
                    _unpack_member(archive, member, target)
                except _Unreadable:
                    target.unlink(missing_ok=True)
                    problems.append((shown, "cannot be read from the archive (damaged or encrypted)"))
                    continue
                label = parts[-2] if len(parts) >= 2 else None
                files.append(UploadedFile(parts[-1], target, label))
    return files


def _unpack_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    """Stream one member to `target`, counting the bytes as they come out: more than the header
    declares (which the size and ratio checks trusted) is _Unreadable. A failure to write (disk
    full) is an OSError for the caller."""
    try:
        source = archive.open(member)
    except _READ_ERRORS as error:
        raise _Unreadable from error
    written = 0
    with source, target.open("wb") as handle:
        while chunk := _read_chunk(source):
            written += len(chunk)
            if written > member.file_size:
                raise _Unreadable
            handle.write(chunk)


def _read_chunk(source: BinaryIO) -> bytes:
    try:
        return source.read(CHUNK)
    except _READ_ERRORS as error:
        raise _Unreadable from error


def read_label_csv(content: bytes) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """A `file,label` CSV (header optional; `,` or `;`; BOM tolerated) -> {file name: label}."""
    text = content.decode("utf-8-sig", errors="replace")
    try:
        dialect = csv.Sniffer().sniff(text[:2048], delimiters=",;")
    except csv.Error:  # one column, empty, or ambiguous: read it as plain comma-separated
        dialect = csv.excel
    labels: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), dialect))
    except csv.Error as error:
        return {}, [("labels CSV", f"cannot be read as CSV ({error})")]
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and [c.strip().lower() for c in row[:2]] == ["file", "label"]):
            continue
        if len(row) < 2 or not row[1].strip():
            problems.append((f"labels CSV line {number}", "no label given"))
            continue
        labels[Path(row[0].strip()).name] = row[1].strip()
    return labels, problems
