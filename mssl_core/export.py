"""Exports of a labeling project: CSV, Label Studio import JSON, and a class-folder zip that
`torchvision.datasets.ImageFolder` reads back."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mssl_core.dicom import DICOM_MAGIC_OFFSET, is_dicom
from mssl_core.images import decode_image


@dataclass(frozen=True)
class ExportRow:
    """One image's final label: `status` is labeled, accepted, corrected or pseudo-labeled."""

    file: str
    label: str
    confidence: float | None
    status: str
    path: Path


def to_csv(rows: list[ExportRow]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "label", "confidence", "status"])
    for row in rows:
        confidence = "" if row.confidence is None else f"{row.confidence:.4f}"
        writer.writerow([row.file, row.label, confidence, row.status])
    return buffer.getvalue().encode("utf-8")


def to_label_studio(rows: list[ExportRow], from_name: str = "label", to_name: str = "image") -> bytes:
    """Label Studio tasks: human decisions as annotations, pseudo-labels as scored predictions."""
    tasks = []
    for row in rows:
        result = [
            {
                "from_name": from_name,
                "to_name": to_name,
                "type": "choices",
                "value": {"choices": [row.label]},
            }
        ]
        task: dict = {"data": {"image": row.file}}
        if row.status == "pseudo-labeled":
            task["predictions"] = [{"model_version": "mssl", "score": row.confidence, "result": result}]
        else:
            task["annotations"] = [{"result": result}]
        tasks.append(task)
    return json.dumps(tasks, indent=2, ensure_ascii=False).encode("utf-8")


def to_class_folders_zip(rows: list[ExportRow]) -> bytes:
    """`<label>/<file>` for every row; clashing names within a class get a numeric suffix.
    DICOM files are written as PNGs of their pixels: ImageFolder reads those, and their
    headers (patient identifiers) stay out of the export."""
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for row in rows:
            label = row.label.replace("/", "_").strip() or "unnamed"
            dicom = _is_dicom_file(row.path)
            stem, suffix = Path(row.file).stem, ".png" if dicom else Path(row.file).suffix or row.path.suffix
            member, n = f"{label}/{stem}{suffix}", 1
            while member in used:
                member, n = f"{label}/{stem}-{n}{suffix}", n + 1
            used.add(member)
            if dicom:
                png = io.BytesIO()
                decode_image(row.path).save(png, format="PNG")
                archive.writestr(member, png.getvalue())
            else:
                archive.write(row.path, member)
    return buffer.getvalue()


def _is_dicom_file(path: Path) -> bool:
    with path.open("rb") as handle:
        return is_dicom(handle.read(DICOM_MAGIC_OFFSET + 4))
