"""Score a model bundle against a labelled folder of pages: AUROC with bootstrap CIs, operating points, plots.

The pages go through the same decode -> preprocess -> `to_input` path as intake, so the numbers describe what
the worker would actually see, not a training-time shortcut. AUROC and curves come from scikit-learn so the
figures can be compared with anyone else's.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from ingest.decode import decode
from ingest.preprocess import preprocess
from model_training.bundle import load_model
from model_training.manifest import Manifest, over_thresholds, probabilities
from model_training.model import to_input

LABELS_CSV = "labels.csv"
DIGITS = 4


class EvaluationError(Exception):
    """Evaluation input that cannot be scored as given; the message names the file or column."""


def read_labels(folder: Path, labels: Sequence[str]) -> tuple[list[Path], np.ndarray]:
    """`folder/labels.csv` -> page paths and a 0/1 int array (N, len(labels)) in the bundle's label order.

    The order comes from the bundle, not the csv, so a column shuffle in the data can never mislabel a class.
    """
    folder = Path(folder)
    path = folder / LABELS_CSV
    if not path.is_file():
        raise EvaluationError(f"no {LABELS_CSV} in {folder}")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [name for name in ("file", *labels) if name not in columns]
        if missing:
            raise EvaluationError(f"{path}: missing column(s) {missing}; it has {columns}")
        rows = list(reader)
    if not rows:
        raise EvaluationError(f"{path} has no rows")
    paths = [folder / row["file"] for row in rows]
    try:
        y = np.array([[int(row[label]) for label in labels] for row in rows], dtype=int)
    except ValueError as exc:
        raise EvaluationError(f"{path}: label values must be 0 or 1: {exc}") from exc
    if not np.isin(y, (0, 1)).all():
        raise EvaluationError(f"{path}: label values must be 0 or 1")
    return paths, y.reshape(len(rows), len(labels))


def _load_page(path: Path, manifest: Manifest, working_copy: bool = True) -> np.ndarray:
    try:
        _, pages = decode(path, working_copy=working_copy)
        return preprocess(pages[0].image, tuple(manifest.input_size), tuple(manifest.preprocess_steps))
    except Exception as exc:  # any decoder or preprocessing failure: say which file
        raise EvaluationError(f"{path.name}: cannot be decoded and preprocessed: {exc}") from exc


def predict_files(model: nn.Module, manifest: Manifest, paths: Sequence[Path], batch_size: int = 16,
                  working_copy: bool = True) -> np.ndarray:
    """Calibrated probabilities (N, labels) for the first page of each file, prepared exactly as intake does.

    Intake decodes straight to the working copy; `working_copy=False` decodes at full resolution instead, to
    measure what that shortcut costs in accuracy.
    """
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            batch = [_load_page(Path(p), manifest, working_copy) for p in paths[start:start + batch_size]]
            out.append(model(to_input(batch)).float().numpy())
    if not out:
        return np.zeros((0, len(manifest.labels)), dtype=np.float32)
    return probabilities(np.concatenate(out), manifest)


def _two_valued(column: np.ndarray) -> bool:
    return np.unique(column).size == 2


def _round(value: float) -> float:
    return round(float(value), DIGITS)


def _ci(values: list[float]) -> list[float]:
    if not values:
        return [math.nan, math.nan]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [_round(lo), _round(hi)]


def metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], thresholds: dict[str, float],
            n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUROC per class and macro with 95% percentile bootstrap CIs over pages, plus sensitivity/specificity,
    calibration error and the share of normal pages (no finding) that get no flag at the thresholds.

    A class with one value in the whole set has no AUROC (NaN, listed in `undefined_classes`, left out of the
    macro). In a bootstrap resample, a class with one value is skipped for that class; the macro is recorded
    only for resamples where every defined class has both values, so it always averages the same classes.
    """
    y_true, probs = np.asarray(y_true).astype(int), np.asarray(probs, dtype=float)
    n, k = y_true.shape
    if probs.shape != (n, k) or k != len(labels):
        raise ValueError(f"y_true {y_true.shape}, probs {probs.shape} and {len(labels)} labels do not agree")
    defined = [i for i in range(k) if _two_valued(y_true[:, i])]
    auroc = {label: math.nan for label in labels}
    for i in defined:
        auroc[labels[i]] = float(roc_auc_score(y_true[:, i], probs[:, i]))
    macro = float(np.mean([auroc[labels[i]] for i in defined])) if defined else math.nan

    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {label: [] for label in labels}
    boot_macro: list[float] = []
    for _ in range(n_bootstrap if defined else 0):
        idx = rng.integers(0, n, n)
        yb, pb = y_true[idx][:, defined], probs[idx][:, defined]
        ok = [j for j in range(len(defined)) if _two_valued(yb[:, j])]
        if not ok:
            continue
        # one multilabel call per resample: sklearn's input checks cost more than the AUROC itself
        scores = np.atleast_1d(roc_auc_score(yb[:, ok], pb[:, ok], average=None))
        for j, score in zip(ok, scores, strict=True):
            boot[labels[defined[j]]].append(float(score))
        if len(ok) == len(defined):
            boot_macro.append(float(np.mean(scores)))

    sensitivity, specificity = {}, {}
    predictions = over_thresholds(probs, [thresholds[label] for label in labels])
    normal = ~y_true.any(axis=1)
    for i, label in enumerate(labels):
        predicted = predictions[:, i]
        positive = y_true[:, i] == 1
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        sensitivity[label] = _round((predicted & positive).sum() / n_pos) if n_pos else math.nan
        specificity[label] = _round((~predicted & ~positive).sum() / n_neg) if n_neg else math.nan

    return {
        "macro_auroc": _round(macro),
        "per_class_auroc": {label: _round(value) for label, value in auroc.items()},
        "macro_auroc_ci": _ci(boot_macro),
        "per_class_auroc_ci": {label: _ci(boot[label]) for label in labels},
        "sensitivity": sensitivity,
        "specificity": specificity,
        "thresholds": {label: _round(thresholds[label]) for label in labels},
        "prevalence": {label: _round(y_true[:, i].mean()) if n else math.nan for i, label in enumerate(labels)},
        # what a reader sees on a healthy ECG: the share of pages with none of the findings that get no flag at all
        "normal_no_flag": _round((~predictions[normal].any(axis=1)).mean()) if normal.any() else math.nan,
        "normal_pages": int(normal.sum()),
        "ece": {label: _round(expected_calibration_error(y_true[:, i], probs[:, i])) for i, label in enumerate(labels)},
        "undefined_classes": [label for i, label in enumerate(labels) if i not in defined],
        "n": int(n),
        "n_bootstrap": int(n_bootstrap),
    }


def paired_comparison(y_true: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, labels: Sequence[str],
                      n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Model B against model A on the same pages: AUROC differences (B - A) with paired bootstrap 95% CIs.

    Both models are scored on the same resample each time, so the interval reflects the difference itself,
    not two independent noises: on a small holdout that is what separates a real gain from luck. Classes
    with one value in the set are left out (listed in `undefined_classes`).
    """
    y_true = np.asarray(y_true).astype(int)
    probs_a, probs_b = np.asarray(probs_a, dtype=float), np.asarray(probs_b, dtype=float)
    n, k = y_true.shape
    defined = [i for i in range(k) if _two_valued(y_true[:, i])]
    per_class = {}
    for i in defined:
        per_class[labels[i]] = float(roc_auc_score(y_true[:, i], probs_b[:, i])
                                     - roc_auc_score(y_true[:, i], probs_a[:, i]))
    rng = np.random.default_rng(seed)
    boot_macro: list[float] = []
    boot: dict[str, list[float]] = {labels[i]: [] for i in defined}
    for _ in range(n_bootstrap if defined else 0):
        idx = rng.integers(0, n, n)
        yb = y_true[idx][:, defined]
        if not all(_two_valued(yb[:, j]) for j in range(len(defined))):
            continue
        diff = (np.atleast_1d(roc_auc_score(yb, probs_b[idx][:, defined], average=None))
                - np.atleast_1d(roc_auc_score(yb, probs_a[idx][:, defined], average=None)))
        boot_macro.append(float(diff.mean()))
        for j, value in enumerate(diff):
            boot[labels[defined[j]]].append(float(value))
    return {
        "macro_auroc_diff": _round(np.mean(list(per_class.values()))) if per_class else math.nan,
        "macro_auroc_diff_ci": _ci(boot_macro),
        "per_class_auroc_diff": {label: _round(value) for label, value in per_class.items()},
        "per_class_auroc_diff_ci": {label: _ci(values) for label, values in boot.items()},
        "undefined_classes": [label for i, label in enumerate(labels) if i not in defined],
        "n": int(n),
        "n_bootstrap": int(n_bootstrap),
        "resamples_used": len(boot_macro),
    }


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Mean gap between predicted probability and observed frequency over 10 equal-width bins, weighted by size."""
    y_true, probs = np.asarray(y_true, dtype=float), np.asarray(probs, dtype=float)
    if not len(y_true):
        return math.nan
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    gaps = [abs(y_true[bins == b].mean() - probs[bins == b].mean()) * (bins == b).mean()
            for b in range(n_bins) if (bins == b).any()]
    return float(np.sum(gaps))


def _agg_figure() -> tuple[Figure, Any]:
    """A figure on an explicit Agg canvas: headless, and outside pyplot's registry, so nothing is left open
    and the caller's matplotlib backend is never switched."""
    fig = Figure(figsize=(6, 6))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def write_plots(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], out_dir: Path) -> list[Path]:
    """`roc.png` and `calibration.png` in `out_dir`; classes with a single value are named but not drawn."""
    y_true, probs = np.asarray(y_true).astype(int), np.asarray(probs, dtype=float)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    roc_fig, roc_ax = _agg_figure()
    cal_fig, cal_ax = _agg_figure()
    for i, label in enumerate(labels):
        if not _two_valued(y_true[:, i]):
            for ax in (roc_ax, cal_ax):
                ax.plot([], [], label=f"{label} (undefined: one class)")
            continue
        fpr, tpr, _ = roc_curve(y_true[:, i], probs[:, i])
        roc_ax.plot(fpr, tpr, label=f"{label} AUROC {roc_auc_score(y_true[:, i], probs[:, i]):.3f}")
        frac_pos, mean_pred = calibration_curve(y_true[:, i], probs[:, i], n_bins=10, strategy="uniform")
        cal_ax.plot(mean_pred, frac_pos, marker="o", label=label)
    roc_ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    roc_ax.set(xlabel="False positive rate", ylabel="True positive rate", title=f"ROC (n={len(y_true)})",
               xlim=(0, 1), ylim=(0, 1.01))
    roc_ax.legend(loc="lower right", fontsize="small")
    cal_ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    cal_ax.set(xlabel="Mean predicted probability", ylabel="Fraction of positives", title="Reliability (10 bins)",
               xlim=(0, 1), ylim=(0, 1.01))
    cal_ax.legend(loc="upper left", fontsize="small")

    written = []
    for fig, name in ((roc_fig, "roc.png"), (cal_fig, "calibration.png")):
        path = out_dir / name
        fig.savefig(path, dpi=100, bbox_inches="tight")
        written.append(path)
    return written


def json_safe(value: Any) -> Any:
    """NaN -> null: `NaN` is not JSON, and readers other than Python reject it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def evaluate_bundle(bundle_dir: Path, data_dir: Path, out_json: Path | None = None, plots_dir: Path | None = None,
                    n_bootstrap: int = 1000, working_copy: bool = True) -> dict[str, Any]:
    """Evaluate a bundle at its own manifest thresholds on a labelled folder; optionally write the report JSON.

    Plots go to `plots_dir`, else next to `out_json`, else `data_dir/evaluation`. In the returned dict an
    undefined value is NaN; in the JSON file it is null.
    """
    bundle_dir, data_dir = Path(bundle_dir), Path(data_dir)
    model, manifest = load_model(bundle_dir)
    labels = list(manifest.labels)
    paths, y_true = read_labels(data_dir, labels)
    probs = predict_files(model, manifest, paths, working_copy=working_copy)
    report = metrics(y_true, probs, labels, {label: manifest.threshold(label) for label in labels},
                     n_bootstrap=n_bootstrap)
    if plots_dir is None:
        plots_dir = Path(out_json).parent if out_json is not None else data_dir / "evaluation"
    plots = write_plots(y_true, probs, labels, Path(plots_dir))
    report.update({"bundle": manifest.model_version, "trained": manifest.trained, "data": str(data_dir),
                   "plots": [str(p) for p in plots]})
    if out_json is not None:
        out_json = Path(out_json)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    return report


def compare_bundles(baseline_dir: Path, bundle_dir: Path, data_dir: Path, out_json: Path | None = None,
                    n_bootstrap: int = 1000) -> dict[str, Any]:
    """`bundle_dir` against `baseline_dir` on the same labelled pages: AUROC differences with paired CIs.

    Two reports on the same small set each carry their own wide interval; the paired interval is what
    says whether one model ranks these pages better than the other.
    """
    paths, y_true = None, None
    probs = []
    for directory in (baseline_dir, bundle_dir):
        model, manifest = load_model(Path(directory))
        labels = list(manifest.labels)
        if paths is None:
            paths, y_true = read_labels(Path(data_dir), labels)
        probs.append(predict_files(model, manifest, paths))
    report = {"baseline": str(baseline_dir), "bundle": str(bundle_dir), "data": str(data_dir),
              **paired_comparison(y_true, probs[0], probs[1], labels, n_bootstrap=n_bootstrap)}
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    return report
