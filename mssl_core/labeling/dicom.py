"""DICOM images (pydicom): the pixels as a radiologist's viewer shows them — modality LUT
(rescale to physical units), then the VOI LUT or window the file specifies, MONOCHROME1
inverted so that bright means dense — scaled to 8 bits. Only the pixels leave this module:
patient identifiers are never read into messages, logs or exports."""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

DICOM_MAGIC_OFFSET = 128  # a 128-byte preamble, then "DICM"
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the dataset is zlib-compressed
MAX_INFLATED_BYTES = 64 * 2**20  # a deflated dataset may expand to this much, no more
LARGE_VALUE = 2**20  # values above this size are read only when used (private blobs never are)


def is_dicom(head: bytes) -> bool:
    """True when the first bytes of a file are a DICOM Part 10 header."""
    return head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


class DicomError(ValueError):
    """A DICOM file whose pixels cannot be used; the message names no patient data."""


def decode_dicom(data: bytes, max_pixels: int) -> Image.Image:
    """The first frame of a DICOM file as an 8-bit grayscale or RGB image. Sizes are checked
    before anything is inflated or decoded, one frame is decoded, and every failure of the
    decoder becomes a DicomError that names the problem."""
    try:
        return _decode(data, max_pixels)
    except DicomError:
        raise
    except Exception as error:  # a lookup table, a colour space or a frame pydicom cannot use
        raise DicomError(f"a DICOM file whose pixels cannot be read ({type(error).__name__})") from None


def _check_inflated_size(deflated: bytes) -> None:
    """Refuse a deflated dataset that would expand beyond MAX_INFLATED_BYTES, by inflating it
    in bounded steps and keeping nothing (pydicom would inflate all of it at once)."""
    inflater, size, pending = zlib.decompressobj(-zlib.MAX_WBITS), 0, deflated
    while pending:
        size += len(inflater.decompress(pending, 2**20))
        if size > MAX_INFLATED_BYTES:
            raise DicomError(f"a deflated DICOM file that expands beyond {MAX_INFLATED_BYTES // 2**20} MB")
        pending = inflater.unconsumed_tail


def _decode(data: bytes, max_pixels: int) -> Image.Image:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space, pixel_array

    # the file meta alone first: a deflated dataset is checked before pydicom inflates it
    stream = io.BytesIO(data)
    try:
        pydicom.filereader.read_preamble(stream, force=False)
        file_meta = pydicom.filereader._read_file_meta_info(stream)  # pydicom's public one takes a path
        if str(file_meta.get("TransferSyntaxUID", "")) == DEFLATED:
            _check_inflated_size(data[stream.tell() :])
        dataset = pydicom.dcmread(io.BytesIO(data), defer_size=LARGE_VALUE)
    except DicomError:
        raise
    except Exception:  # pydicom raises many types for a damaged header
        raise DicomError("a damaged DICOM file (its header cannot be read)") from None
    if "PixelData" not in dataset:
        raise DicomError("a DICOM file without an image (no pixel data)")
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    if rows * columns > max_pixels:
        raise DicomError(f"{columns} x {rows} pixels is larger than the {max_pixels:,}-pixel limit")
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:  # the first frame alone: a multi-frame file is not decoded whole
        pixels = pixel_array(dataset, index=0 if frames > 1 else None)
    except Exception:
        name = getattr(syntax, "name", str(syntax))
        raise DicomError(
            f"DICOM compressed as '{name}', which cannot be decoded here; export it uncompressed"
        ) from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if int(dataset.get("SamplesPerPixel", 1)) == 3:
        if photometric.startswith("YBR") and not (syntax and syntax.is_compressed):
            pixels = convert_color_space(pixels, photometric, "RGB")
        return Image.fromarray(_to_uint8(pixels.astype(np.float64)), "RGB")
    values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
    image = _to_uint8(values)
    if photometric == "MONOCHROME1":  # low values are bright in MONOCHROME1
        image = 255 - image
    return Image.fromarray(image, "L")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return ((values - low) / max(high - low, 1e-9) * 255).round().astype(np.uint8)
