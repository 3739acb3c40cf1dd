"""Exports of a labeling project: CSV, Label Studio import JSON, and a class-folder zip that
`torchvision.datasets.ImageFolder` reads back.

Exports leave the hospital: images are re-encoded from their pixels (no EXIF, comments, text
chunks or DICOM headers, where names and dates hide), file names can be replaced by pseudonyms,
cells a spreadsheet would run as formulas are defused, and no label can become a path."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from mssl_core.labeling.images import decode_image

# A cell starting with one of these is run as a formula by Excel, LibreOffice and Sheets (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
WINDOWS_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}


@dataclass(frozen=True)
class ExportRow:
    """One image's final label: `status` is labeled, accepted, corrected or pseudo-labeled."""

    file: str
    label: str
    confidence: float | None
    status: str
    path: Path


def spreadsheet_safe(cell: str) -> str:
    """`cell`, with a leading apostrophe if a spreadsheet would otherwise run it as a formula."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def path_part(name: str) -> str:
    """`name` as one safe folder or file name: no separators, control characters, `.`/`..`,
    trailing dots or spaces, or names Windows reserves (CON, NUL, COM1, ...)."""
    cleaned = re.sub(r"[\x00-\x1f\x7f/\\:*?\"<>|]", "_", name).strip().rstrip(". ")
    if not cleaned or set(cleaned) == {"."}:
        return "unnamed"
    if cleaned.split(".")[0].lower() in WINDOWS_RESERVED:
        return "_" + cleaned
    return cleaned


def pseudonymised(rows: list[ExportRow]) -> list[ExportRow]:
    """The same rows with file names `image-000001.png`, ...: original names often identify a
    patient. The order of `rows` numbers them; the mapping stays in the project."""
    return [replace(row, file=f"image-{n:06d}{Path(row.file).suffix.lower()}") for n, row in enumerate(rows, 1)]


def to_csv(rows: list[ExportRow]) -> bytes:
    return _spreadsheet_csv(
        ["file", "label", "confidence", "status"],
        [
            [row.file, row.label, "" if row.confidence is None else f"{row.confidence:.4f}", row.status]
            for row in rows
        ],
    )


def audit_trail_csv(trail: list[dict]) -> bytes:
    """A project's audit trail (`LabelingProject.audit_trail`), one decision a row: when (UTC,
    ISO 8601), who (named user, browser session), on which image, what."""
    return _spreadsheet_csv(
        ["decided_at", "user", "session", "image", "action", "label"],
        [
            [
                datetime.fromtimestamp(t["decided_at"], UTC).isoformat(timespec="seconds"),
                t["user"] or "",
                t["session"] or "",
                t["image"],
                t["action"],
                t["label"] or "",
            ]
            for t in trail
        ],
    )


def _spreadsheet_csv(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    return buffer.getvalue().encode("utf-8")


def choices_result(label: str, from_name: str = "label", to_name: str = "image") -> dict:
    """One Label Studio `choices` result: `label` chosen in the `from_name` tag for `to_name`."""
    return {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}


def to_label_studio(rows: list[ExportRow], from_name: str = "label", to_name: str = "image") -> bytes:
    """Label Studio tasks: human decisions as annotations, pseudo-labels as scored predictions."""
    tasks = []
    for row in rows:
        result = [choices_result(row.label, from_name, to_name)]
        task: dict = {"data": {"image": row.file}}
        if row.status == "pseudo-labeled":
            task["predictions"] = [{"model_version": "mssl", "score": row.confidence, "result": result}]
        else:
            task["annotations"] = [{"result": result}]
        tasks.append(task)
    return json.dumps(tasks, indent=2, ensure_ascii=False).encode("utf-8")


def to_class_folders_zip(rows: list[ExportRow]) -> bytes:
    """`<label>/<file>` for every row; clashing names within a class get a numeric suffix.
    Every image is re-encoded from its decoded pixels, without metadata: JPEGs as JPEG
    (quality 95), everything else (DICOM, TIFF, ...) as PNG, which ImageFolder reads."""
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for row in rows:
            jpeg = Path(row.file).suffix.lower() in (".jpg", ".jpeg")
            stem, suffix = path_part(Path(row.file).stem), ".jpg" if jpeg else ".png"
            label = path_part(row.label)
            member, n = f"{label}/{stem}{suffix}", 1
            while member in used:
                member, n = f"{label}/{stem}-{n}{suffix}", n + 1
            used.add(member)
            archive.writestr(member, _without_metadata(row.path, jpeg))
    return buffer.getvalue()


def _without_metadata(path: Path, jpeg: bool) -> bytes:
    """The image's pixels alone, encoded afresh."""
    image = decode_image(path)
    image.info.clear()  # Pillow writes back a JPEG comment, EXIF or ICC profile it finds there
    encoded = io.BytesIO()
    image.save(encoded, format="JPEG" if jpeg else "PNG", **({"quality": 95} if jpeg else {}))
    return encoded.getvalue()
