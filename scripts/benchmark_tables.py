"""Markdown summaries of a saved benchmark (`docs/benchmark.json`) for the README (accuracy, and
calibration on the 5-shot settings), and the full plain-text table (`docs/benchmark.txt`):

    python -m mssl_core evaluate --jobs 2 --json > docs/benchmark.json
    python scripts/benchmark_tables.py docs/benchmark.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mssl_core.engine.evaluate import format_table


def cell(row: dict | None) -> str:
    return "" if row is None else f"{row['accuracy'] * 100:.2f} ± {row['ci95'] * 100:.2f}"


def method_of(row: dict) -> str:
    """The method of a model's row: shipped models are named `{backbone}-{method}`."""
    return row["model"].split("-", 1)[1]


def markdown(rows: list[dict], backbone_for: dict[str, str]) -> str:
    """Rows: baselines, then every method as "labeled only → with the unlabeled images";
    columns: the settings (characters on Conv-4, real sets on the backbone given)."""
    settings = list(dict.fromkeys((r["dataset"], r["setting"]) for r in rows))
    methods = list(dict.fromkeys(method_of(r) for r in rows if r["model"]))

    def find(dataset: str, setting: str, **fields) -> dict | None:
        """The row of a setting on the dataset's backbone whose `fields` have these values."""
        backbone = backbone_for.get(dataset, "conv4")
        return next(
            (r for r in rows if (r["dataset"], r["setting"]) == (dataset, setting)
             and r["backbone"] in (backbone, "pixels") and all(r[k] == v for k, v in fields.items())),
            None,
        )  # fmt: skip

    def short(dataset: str, setting: str) -> str:
        setting = setting.replace(" unlabeled/class", " unl.").replace(" distractor classes", " distr.")
        return f"{dataset} {setting}"

    header = ["method"] + [short(*key) for key in settings]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for baseline in ("nearest centroid", "logistic regression", "LabelSpreading"):
        cells = [cell(find(d, s, kind="baseline", method=baseline)) for d, s in settings]
        lines.append("| " + " | ".join([baseline, *cells]) + " |")
    for method in methods:
        cells = [method]
        for dataset, setting in settings:
            model = f"{backbone_for.get(dataset, 'conv4')}-{method}"
            plain, semi = (find(dataset, setting, model=model, semi_supervised=u) for u in (False, True))
            cells.append(f"{cell(plain)} → **{cell(semi)}**")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def calibration_markdown(rows: list[dict]) -> str:
    """ECE of the rows the app runs (each model as shipped) on every 5-shot setting, each
    backbone and the automatic choice on the real sets; ECE* (with the per-task domain factor)
    in brackets where measured."""
    shipped = [r for r in rows if r["kind"] == "shipped"]
    columns = list(
        dict.fromkeys((r["dataset"], r["setting"], r["backbone"]) for r in shipped if r["shots"] == 5)
    )
    names = list(dict.fromkeys(method_of(r) for r in shipped))

    def ece(dataset: str, setting: str, backbone: str, method: str) -> str:
        model = f"{backbone}-{method}"
        column = (dataset, setting, backbone)
        row = next(
            (
                r
                for r in shipped
                if (r["dataset"], r["setting"], r["backbone"]) == column and r["model"] == model
            ),
            None,
        )
        if row is None:
            return ""
        star = row.get("ece_support_calibrated")
        return f"{row['ece']:.3f}" + ("" if star is None else f" ({star:.3f})")

    header = ["method"] + [
        f"{d} {s.split(',')[0]}{', distr.' if 'distractor' in s else ''} ({b})" for d, s, b in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in names:
        lines.append("| " + " | ".join([method] + [ece(*column, method) for column in columns]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmark.json")
    rows = json.loads(path.read_text())
    path.with_suffix(".txt").write_text(format_table(rows) + "\n")
    print(markdown(rows, {"fashion-mnist": "mobilenetv2"}))
    print()
    print(calibration_markdown(rows))
