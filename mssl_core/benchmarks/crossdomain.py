"""The cross-domain benchmark: what `label` and the app give on image domains unlike anything
the models were meta-trained on, beside simple baselines computed on the same episodes.

Each episode is a labeling task as a user brings it: a few labeled images per class and a
batch of unlabeled ones, which are the images scored (the batch *is* what gets pseudo-labeled).
The product's row runs the code `label` runs after embedding: `labeling.fit_task` with the
default method on the combined source (combined_source.py: every source's calibrated
predictions averaged, confidence checked on the task's labeled images). Baselines (as in the
held-out checks): nearest class mean on 32x32 raw pixels; on ImageNet MobileNetV2 features
centred on the task and L2-normalised: nearest class mean, logistic regression and label
spreading (k = 10, alpha = 0.2). Rows per fixed feature source show what each contributes.

Domains are split into development and test ones (data/domains.py); a choice fitted on
benchmark data (`fit_one_shot_factors`) refuses test domains.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading
from torch import Tensor

from mssl_core.engine.backbones import embed_images
from mssl_core.engine.calibration import calibrated_logits, expected_calibration_error, fit_temperature
from mssl_core.engine.data.domains import DOMAINS, Domain, domain
from mssl_core.engine.data.episodes import Episode, EpisodeSampler, EpisodeSpec
from mssl_core.engine.data.paths import REPO_ROOT
from mssl_core.engine.evaluate import cached_pool
from mssl_core.engine.model_cards import default_method
from mssl_core.labeling.adapt import FEATURE_SOURCES, fit_task, model_for

logger = logging.getLogger(__name__)

SHOTS = (1, 5, 10)
MAX_WAYS = 5
POOL_PER_CLASS = 100  # images per class drawn once per domain (fewer where a class has fewer)
UNLABELED_PER_CLASS = 50  # the batch: up to this many per class, as the pool allows
ACCEPT_THRESHOLD = 0.9  # "accept everything at or above": promised vs actual precision there
BASELINES = (
    "nearest class mean, raw pixels",
    "nearest class mean, ImageNet centred",
    "logistic regression, ImageNet centred",
    "label spreading, ImageNet centred",
)
DEFAULT_ROW = "default (label / app)"
# the default fitted to the labeled images alone, then predicting the batch: what the batch adds
LABELED_ONLY_ROW = "default, labeled images only"
RESULTS_PATH = REPO_ROOT / "docs" / "crossdomain.json"  # the published run


@dataclass(frozen=True)
class Setting:
    domain: str
    ways: int
    shots: int
    unlabeled: int  # per class

    @property
    def label(self) -> str:
        return f"{self.ways}-way {self.shots}-shot, {self.unlabeled} unlabeled/class"


@dataclass
class DomainPool:
    """A domain's images laid out `(n_classes, n_per_class, ...)`, and their features per source."""

    images: np.ndarray
    features: dict[str, Tensor]  # source -> flat `(n_classes * n_per_class, dim)`
    pixels32: np.ndarray  # the raw-pixel baseline's features

    def tasks(self, ways: int, shots: int, per_class: int, seed: int) -> EpisodeSampler:
        """Tasks of `ways` classes (all of them where the domain has fewer), `shots` labeled
        images and up to `per_class` batch images per class."""
        n_classes, n_per_class = self.images.shape[:2]
        spec = EpisodeSpec(min(ways, n_classes), shots, min(per_class, n_per_class - shots), 0, 0)
        return EpisodeSampler(n_classes, n_per_class, spec, seed=seed)


def class_pool(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed random `min(POOL_PER_CLASS, smallest class)` images of every class."""
    rng = np.random.default_rng(seed)
    per_class = min(POOL_PER_CLASS, int(np.bincount(labels).min()))
    return np.stack(
        [images[rng.permutation(np.flatnonzero(labels == c))[:per_class]] for c in np.unique(labels)]
    )


def settings(
    names: list[str] | None = None, shots: tuple[int, ...] = SHOTS, ways: tuple[int, ...] = (MAX_WAYS,)
) -> list[Setting]:
    """Per domain, each of `ways` (capped at the classes it has) at every shot count; the batch
    as large as the smallest class allows after the largest support set."""
    grid = []
    for d in DOMAINS:
        if names and d.name not in names:
            continue
        _, labels, classes = d.load()
        per_class = min(POOL_PER_CLASS, int(np.bincount(labels).min()))
        unlabeled = min(UNLABELED_PER_CLASS, per_class - max(shots))
        for n in dict.fromkeys(min(w, len(classes)) for w in ways):
            grid += [Setting(d.name, n, k, unlabeled) for k in shots]
    return grid


def embed_as_labeled(backbone, images: np.ndarray) -> Tensor:
    """Embeddings of a class pool through decoded pictures, as `label` embeds files (raw-pixel
    sources included: the benchmark's shortcut for 28 px arrays skips their preprocessing)."""
    flat = images.reshape(-1, *images.shape[2:])
    return embed_images(backbone, [Image.fromarray(a) for a in flat])


def domain_pool(d: Domain, method: str) -> DomainPool:
    """The domain's class pool and its features from every source (cached on disk)."""
    images = class_pool(*d.load()[:2])
    features = {}
    for source in FEATURE_SOURCES:
        model = model_for(method, source)
        features[source] = cached_pool(
            f"crossdomain-{d.name}", model.backbone_key, model.backbone, images, embed_as_labeled
        )
    flat = images.reshape(-1, *images.shape[2:])
    pixels = np.stack(
        [np.asarray(Image.fromarray(a).convert("L").resize((32, 32)), np.float32).ravel() / 255 for a in flat]
    )
    return DomainPool(images, features, pixels)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def baseline_predictions(pool: DomainPool, episode: Episode) -> dict[str, np.ndarray]:
    """Predicted labels of the batch by each baseline."""
    s, u = episode.support, episode.unlabeled
    labels = episode.support_labels
    ways = int(labels.max()) + 1

    def nearest_mean(support: np.ndarray, batch: np.ndarray) -> np.ndarray:
        means = np.stack([support[labels == c].mean(0) for c in range(ways)])
        return ((batch[:, None] - means[None]) ** 2).sum(-1).argmin(1)

    imagenet = pool.features["imagenet"][:, -1280:].numpy()  # the final pooled ImageNet features
    unit = _unit(imagenet[np.concatenate([s, u])])
    task = unit - unit.mean(0)
    centred = _unit(task)
    cs, cu = centred[: len(s)], centred[len(s) :]
    spreading = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2, max_iter=100)
    spreading.fit(centred, np.concatenate([labels, -np.ones(len(u), int)]))
    return {
        BASELINES[0]: nearest_mean(pool.pixels32[s], pool.pixels32[u]),
        BASELINES[1]: nearest_mean(cs, cu),
        BASELINES[2]: LogisticRegression(max_iter=2000).fit(cs, labels).predict(cu),
        BASELINES[3]: spreading.transduction_[len(s) :],
    }


def episode_outcomes(models: dict, pool: DomainPool, episode: Episode) -> dict[str, tuple]:
    """Per row: the batch's predicted labels and confidences (None for baselines)."""
    labels = torch.from_numpy(episode.support_labels)
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    outcomes = {name: (predicted, None) for name, predicted in baseline_predictions(pool, episode).items()}

    def outcome(source: str, with_batch: bool = True) -> tuple:
        support, batch = pool.features[source][episode.support], pool.features[source][episode.unlabeled]
        task = fit_task(models[source], classes, support, labels, batch if with_batch else batch[:0])
        probabilities = task.probabilities(batch).numpy()
        return probabilities.argmax(1), probabilities.max(1)

    for source in models:
        outcomes[f"{source} features"] = outcome(source)
    if FEATURE_SOURCES[0] in models:
        outcomes[DEFAULT_ROW] = outcomes[f"{FEATURE_SOURCES[0]} features"]
        outcomes[LABELED_ONLY_ROW] = outcome(FEATURE_SOURCES[0], with_batch=False)
    return outcomes


def setting_rows(
    setting: Setting,
    episodes: int,
    seed: int,
    log: Callable[[str], None] = logger.info,
    sources: tuple[str, ...] = FEATURE_SOURCES,
) -> list[dict]:
    """Every row of one setting over the same `episodes` tasks: the baselines' and those of the
    feature `sources` (the default's where the default source is among them)."""
    method = default_method()
    d = domain(setting.domain)
    pool = domain_pool(d, method)
    models = {source: model_for(method, source) for source in sources}
    n_classes, n_per_class = pool.images.shape[:2]
    spec = EpisodeSpec(setting.ways, setting.shots, setting.unlabeled, 0, 0)
    episode_seed = seed * 1000 + int(hashlib.sha1(setting.domain.encode()).hexdigest()[:4], 16) + setting.shots
    sampler = EpisodeSampler(n_classes, n_per_class, spec, seed=episode_seed)
    per_row: dict[str, dict[str, list]] = {}
    for _ in range(episodes):
        episode = sampler.sample()
        truth = episode.unlabeled_labels
        for name, (predicted, confidence) in episode_outcomes(models, pool, episode).items():
            row = per_row.setdefault(name, {"accuracy": [], "confidence": [], "correct": []})
            row["accuracy"].append(float((predicted == truth).mean()))
            if confidence is not None:
                row["confidence"].append(confidence)
                row["correct"].append(predicted == truth)
    rows = []
    for name, values in per_row.items():
        accuracy = np.asarray(values["accuracy"])
        row = {
            "domain": setting.domain,
            "role": d.role,
            "kind": d.kind,
            "setting": setting.label,
            "ways": setting.ways,
            "shots": setting.shots,
            "unlabeled": setting.unlabeled,
            "episodes": episodes,
            "seed": episode_seed,
            "row": name,
            "accuracy": round(float(accuracy.mean()), 4),
            "ci95": round(float(1.96 * accuracy.std(ddof=1) / np.sqrt(len(accuracy))), 4),
        }
        if values["confidence"]:
            row.update(
                confidence_figures(np.concatenate(values["confidence"]), np.concatenate(values["correct"]))
            )
        rows.append(row)
        log(f"{setting.domain:20s} {setting.label:36s} {name:40s} {row['accuracy']:.2%} ± {row['ci95']:.2%}")
    return rows


def confidence_figures(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """ECE, and at ACCEPT_THRESHOLD: how many images, the precision promised (their mean
    confidence) and the precision they actually have."""
    accepted = confidence >= ACCEPT_THRESHOLD
    figures = {"ece": round(expected_calibration_error(confidence, correct.astype(float)), 4)}
    figures["accepted_share"] = round(float(accepted.mean()), 4)
    if accepted.any():
        figures["promised_precision"] = round(float(confidence[accepted].mean()), 4)
        figures["actual_precision"] = round(float(correct[accepted].mean()), 4)
    return figures


def fit_one_shot_factors(names: list[str], episodes: int = 100, seed: int = 0) -> dict[str, float]:
    """The factors of `combined_source.ONE_SHOT_FACTORS`: per member of the combined source, the
    factor on its table's temperature that makes one-shot confidence right on average over the
    development domains `names` (maximum likelihood over their batch images), then the
    ensemble's temperature on the members so calibrated, as they are after its self-training
    (`SourceEnsemble._self_train`). With one labeled image per class nothing can be held out,
    so this is the best prior available; a test domain is refused."""
    chosen = [domain(name) for name in names]
    tests = [d.name for d in chosen if d.role != "development"]
    if tests:
        raise ValueError(f"choices are fitted on development domains only; got {', '.join(tests)}")
    method = default_method()
    ensemble = model_for(method, "combined").method
    members = ensemble.members_for(two_per_class=False)
    logits: dict[str, list[Tensor]] = {name: [] for name in members}
    tasks, truths = [], []
    for d in chosen:
        pool = domain_pool(d, method)
        features = pool.features["combined"]
        sampler = pool.tasks(MAX_WAYS, 1, UNLABELED_PER_CLASS, seed)
        for _ in range(episodes):
            episode = sampler.sample()
            task = (
                features[episode.support],
                torch.from_numpy(episode.support_labels),
                features[episode.unlabeled],
            )
            for name, member in members.items():
                fitted = copy.deepcopy(member)
                with torch.no_grad():
                    fitted.fit(*task)
                    logits[name].append(_padded(calibrated_logits(fitted, task[2])))
            tasks.append(task)
            truths.append(episode.unlabeled_labels)
    truth = torch.from_numpy(np.concatenate(truths))
    joined = {name: torch.cat(values) for name, values in logits.items()}
    factors = {name: fit_temperature(values, truth) for name, values in joined.items()}
    combined = torch.stack([torch.log_softmax(joined[n] / factors[n], dim=1) for n in members]).mean(0)
    # the self-training picks by these factors; the ensemble's temperature is then fitted again
    # on its scores after it (the images it labeled keep the scores that chose them)
    ensemble.one_shot_factors = {**factors, "combined": fit_temperature(combined, truth)}
    self_trained = []
    for support, labels, batch in tasks:
        fitted = copy.deepcopy(ensemble)
        with torch.no_grad():
            fitted.fit(support, labels, batch)
            self_trained.append(_padded(fitted.logits(batch)))
    factors["combined"] = fit_temperature(torch.cat(self_trained), truth)
    return {name: round(value, 3) for name, value in factors.items()}


def _padded(logits: Tensor) -> Tensor:
    """Logits of tasks of fewer ways padded to MAX_WAYS with classes no image can belong to."""
    return torch.nn.functional.pad(logits, (0, MAX_WAYS - logits.shape[1]), value=-1e4)


def _setting_rows_in_worker(args: tuple) -> list[dict]:
    torch.set_num_threads(1)  # one process per core
    setting, episodes, seed, sources = args
    return setting_rows(setting, episodes, seed, logger.info, sources)


def run_crossdomain(
    names: list[str] | None = None,
    episodes: int = 200,
    seed: int = 0,
    shots: tuple[int, ...] = SHOTS,
    jobs: int = 1,
    log: Callable[[str], None] = logger.info,
    ways: tuple[int, ...] = (MAX_WAYS,),
    sources: tuple[str, ...] = FEATURE_SOURCES,
) -> list[dict]:
    """Rows of every setting (see the module docstring); of the baselines and the feature
    `sources` only, where fewer are given (`setting_rows`)."""
    grid = settings(names, shots, ways)
    method = default_method()
    for name in dict.fromkeys(s.domain for s in grid):
        domain_pool(domain(name), method)  # embedded once, here, so workers only load them
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as workers:
            chunks = list(workers.map(_setting_rows_in_worker, [(s, episodes, seed, sources) for s in grid]))
    else:
        chunks = [setting_rows(s, episodes, seed, log, sources) for s in grid]
    return [row for chunk in chunks for row in chunk]


def merged(published: list[dict], rows: list[dict]) -> list[dict]:
    """The published rows with those of a new run in place of the same domain, setting and row
    (a run of some feature sources refreshes their rows and leaves the others), new ones after."""

    def key(row: dict) -> tuple:
        return row["domain"], row["setting"], row.get("row")

    fresh = {key(row): row for row in rows}
    kept = [fresh.pop(key(row), row) for row in published]
    return kept + list(fresh.values())


def summary(rows: list[dict]) -> list[dict]:
    """Per domain, ways and shots: the default's accuracy, the best baseline's, and the confidence
    figures."""
    table = []
    results = [r for r in rows if "row" in r]
    for key in dict.fromkeys((r["domain"], r["ways"], r["shots"]) for r in results):
        mine = {r["row"]: r for r in results if (r["domain"], r["ways"], r["shots"]) == key}
        best = max(BASELINES, key=lambda b: mine[b]["accuracy"])
        default = mine[DEFAULT_ROW]
        table.append(
            {
                "domain": key[0],
                "role": default["role"],
                "ways": key[1],
                "shots": key[2],
                "default": default,
                "best_baseline": best,
                "baseline": mine[best],
                "rows": mine,
            }
        )
    return table


def format_table(rows: list[dict]) -> str:
    """A plain-text table: per setting, the default against the best baseline, and calibration."""
    lines = [
        f"{'domain':20s} {'role':11s} {'setting':36s} {'default (95% CI)':>17s} {'best baseline':>15s} "
        f"{'gap':>6s} {'ECE':>6s} {'>=0.9':>6s} {'promised':>8s} {'actual':>7s}  best baseline"
    ]
    for entry in summary(rows):
        d, b = entry["default"], entry["baseline"]
        gap = (d["accuracy"] - b["accuracy"]) * 100
        promised = f"{d['promised_precision']:.1%}" if "promised_precision" in d else "-"
        actual = f"{d['actual_precision']:.1%}" if "actual_precision" in d else "-"
        lines.append(
            f"{entry['domain']:20s} {entry['role']:11s} {d['setting']:36s} "
            f"{d['accuracy']:7.2%} ± {d['ci95']:5.2%} {b['accuracy']:15.2%} {gap:+6.1f} {d['ece']:6.3f} "
            f"{d['accepted_share']:6.1%} {promised:>8s} {actual:>7s}  {entry['best_baseline']}"
        )
    lines.append("")
    lines.append("Every row, accuracy % (95% CI):")
    for entry in summary(rows):
        cells = "; ".join(f"{name} {r['accuracy']:.2%}" for name, r in entry["rows"].items())
        lines.append(f"  {entry['domain']} {entry['ways']}-way {entry['shots']}-shot: {cells}")
    return "\n".join(lines)


def plain_summary(rows: list[dict]) -> list[dict]:
    """One flat record per domain and shot count, in words a non-specialist reads (the Model page)."""
    records = []
    for entry in summary(rows):
        d, b = entry["default"], entry["baseline"]
        records.append(
            {
                "images": d["kind"],
                "domain": entry["domain"],
                "used to make choices": "yes" if entry["role"] == "development" else "no (test)",
                "labeled per class": entry["shots"],
                "classes": d["ways"],
                "right, this app": d["accuracy"],
                "± (95% CI)": d["ci95"],
                "right, best simple baseline": b["accuracy"],
                # measured since 2026-12-03: absent from rows published before
                "right, this app without the batch": entry["rows"].get(LABELED_ONLY_ROW, {}).get("accuracy"),
                "difference (points)": round((d["accuracy"] - b["accuracy"]) * 100, 1),
                "calibration error": round(d["ece"], 3),
                "at ≥ 90% confidence: promised": d.get("promised_precision"),
                "actually right": d.get("actual_precision"),
                "tasks": d["episodes"],
            }
        )
    return records


def load_results(path: Path = RESULTS_PATH) -> list[dict]:
    """The rows of the last published run ([] if there is none)."""
    return json.loads(path.read_text()) if path.exists() else []
