"""Evaluation: AUROC, bootstrap CIs and operating points on known arrays, and a real bundle scored end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_training.bundle import create_untrained_bundle, load_model
from model_training.evaluate import (
    EvaluationError,
    evaluate_bundle,
    metrics,
    predict_files,
    read_labels,
)
from model_training.operating import OperatingPoint, threshold_for
from model_training.synth.dataset import write_dataset
from model_training.synth.signals import LABELS

THREE = ["A", "B", "C"]
HALF = dict.fromkeys(THREE, 0.5)


def _separable(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Every positive scores above every negative, in each of three classes with different prevalence."""
    rng = np.random.default_rng(1)
    y = np.stack([np.arange(n) % m == 0 for m in (2, 3, 4)], axis=1).astype(int)
    probs = np.where(y == 1, rng.uniform(0.6, 1.0, y.shape), rng.uniform(0.0, 0.4, y.shape))
    return y, probs


def test_perfect_ranking_gives_one_with_a_degenerate_ci() -> None:
    y, probs = _separable()
    result = metrics(y, probs, THREE, HALF, n_bootstrap=100)
    assert result["macro_auroc"] == 1.0
    assert result["per_class_auroc"] == dict.fromkeys(THREE, 1.0)
    assert result["macro_auroc_ci"] == [1.0, 1.0]
    assert result["per_class_auroc_ci"] == {label: [1.0, 1.0] for label in THREE}
    assert result["undefined_classes"] == []
    assert result["n"] == 40 and result["n_bootstrap"] == 100


def test_reversed_ranking_gives_zero() -> None:
    y, probs = _separable()
    result = metrics(y, 1.0 - probs, THREE, HALF, n_bootstrap=50)
    assert result["macro_auroc"] == 0.0
    assert result["per_class_auroc"] == dict.fromkeys(THREE, 0.0)
    assert result["macro_auroc_ci"] == [0.0, 0.0]


def test_random_scores_are_near_chance_and_the_ci_covers_it() -> None:
    rng = np.random.default_rng(7)
    labels = list(LABELS)
    y = rng.integers(0, 2, (2000, len(labels)))
    probs = rng.random((2000, len(labels)))
    result = metrics(y, probs, labels, dict.fromkeys(labels, 0.5), n_bootstrap=200, seed=3)
    assert abs(result["macro_auroc"] - 0.5) < 0.05
    lo, hi = result["macro_auroc_ci"]
    assert lo < 0.5 < hi
    assert lo < result["macro_auroc"] < hi
    assert hi - lo < 0.1  # 2,000 pages pin the macro down; a broken resampler gives a zero or huge width
    for label in labels:
        c_lo, c_hi = result["per_class_auroc_ci"][label]
        assert c_lo <= result["per_class_auroc"][label] <= c_hi
    # the same seed gives the same intervals; another seed does not
    first, again, other = (metrics(y[:500], probs[:500], labels, dict.fromkeys(labels, 0.5), n_bootstrap=40, seed=s)
                           for s in (3, 3, 4))
    assert again["per_class_auroc_ci"] == first["per_class_auroc_ci"]
    assert other["per_class_auroc_ci"] != first["per_class_auroc_ci"]


def test_sensitivity_and_specificity_match_a_hand_count() -> None:
    y = np.array([[1], [1], [1], [0], [0], [0], [0]])
    p = np.array([[0.9], [0.6], [0.2], [0.7], [0.1], [0.3], [0.6]])
    # threshold 0.6 (>= is positive): TP 2 (0.9, 0.6), FN 1 (0.2); FP 2 (0.7, 0.6), TN 2 (0.1, 0.3)
    result = metrics(y, p, ["X"], {"X": 0.6}, n_bootstrap=10)
    assert result["sensitivity"] == {"X": round(2 / 3, 4)}
    assert result["specificity"] == {"X": 0.5}
    assert result["thresholds"] == {"X": 0.6}
    assert result["prevalence"] == {"X": round(3 / 7, 4)}
    # AUROC by hand over the 12 positive/negative pairs: 0.9 beats all 4, 0.6 beats 2 and ties 1 (a half),
    # 0.2 beats 1 -> 7.5 / 12
    assert result["per_class_auroc"] == {"X": 0.625}


def test_a_class_with_one_value_is_undefined_and_left_out_of_the_macro() -> None:
    y, probs = _separable()
    y[:, 1] = 0  # B never occurs
    probs[:, 0] = 1.0 - probs[:, 0]  # A reversed: AUROC 0; C perfect: AUROC 1
    result = metrics(y, probs, THREE, HALF, n_bootstrap=50)
    assert math.isnan(result["per_class_auroc"]["B"])
    assert all(math.isnan(v) for v in result["per_class_auroc_ci"]["B"])
    assert math.isnan(result["sensitivity"]["B"])
    assert result["undefined_classes"] == ["B"]
    assert result["macro_auroc"] == 0.5  # mean of A and C only
    assert result["macro_auroc_ci"] == [0.5, 0.5]


def test_youden_threshold_falls_between_the_classes() -> None:
    y = np.array([[0, 1], [0, 1], [0, 1], [1, 1], [1, 1], [1, 1]])
    p = np.array([[0.05, 0.5], [0.2, 0.5], [0.3, 0.5], [0.55, 0.5], [0.8, 0.5], [0.95, 0.5]])
    chosen = {"sep": threshold_for(y[:, 0], p[:, 0], OperatingPoint()),
              "constant": threshold_for(y[:, 1], p[:, 1], OperatingPoint())}
    assert 0.3 < chosen["sep"] <= 0.55
    predicted = p[:, 0] >= chosen["sep"]
    assert (predicted == y[:, 0].astype(bool)).all()
    assert chosen["constant"] == 0.5


def test_read_labels_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"labels\.csv"):
        read_labels(tmp_path, LABELS)
    (tmp_path / "labels.csv").write_text("file,MI,AF\na.png,1,0\nb.png,0,1\n")
    with pytest.raises(EvaluationError, match="STTC"):
        read_labels(tmp_path, LABELS)
    paths, y = read_labels(tmp_path, ["AF", "MI"])  # the caller's order, not the csv's
    assert paths == [tmp_path / "a.png", tmp_path / "b.png"]
    assert y.tolist() == [[0, 1], [1, 0]]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    create_untrained_bundle(root / "bundle", "convnext_atto", (96, 128))
    write_dataset(root / "data", 24, ("png",), "light", seed=4242, dpi=60, workers=1)
    return root / "bundle", root / "data"


def test_evaluate_bundle_end_to_end(scored: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, data = scored
    out_json = tmp_path / "report" / "eval.json"
    result = evaluate_bundle(bundle, data, out_json=out_json, n_bootstrap=100)

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    report = json.loads(out_json.read_text(), parse_constant=refuse)
    assert set(report["per_class_auroc"]) == set(LABELS)
    assert set(report["per_class_auroc_ci"]) == set(LABELS)
    assert len(report["macro_auroc_ci"]) == 2
    assert report["n"] == 24 and report["trained"] is False
    assert report["bundle"] == result["bundle"] and report["bundle"].startswith("untrained-convnext_atto@")
    assert report["data"] == str(data)
    assert isinstance(report["macro_auroc"], float) and 0.0 <= report["macro_auroc"] <= 1.0
    for label in LABELS:
        value = report["per_class_auroc"][label]
        if label in report["undefined_classes"]:
            assert value is None and math.isnan(result["per_class_auroc"][label])
        else:
            lo, hi = report["per_class_auroc_ci"][label]
            assert 0.0 <= lo <= hi <= 1.0 and 0.0 <= value <= 1.0
    assert report["thresholds"] == dict.fromkeys(LABELS, 0.5)
    labels_y = read_labels(data, LABELS)[1]
    assert report["prevalence"] == {label: round(float(labels_y[:, i].mean()), 4) for i, label in enumerate(LABELS)}

    plots = [Path(p) for p in report["plots"]]
    assert sorted(p.name for p in plots) == ["calibration.png", "roc.png"]
    for path in plots:
        assert path.parent == out_json.parent
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_a_file_that_will_not_decode_is_named(scored: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, data = scored
    model, manifest = load_model(bundle)
    broken = tmp_path / "broken-page.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    good = sorted(data.glob("*.png"))[:2]
    probs = predict_files(model, manifest, good, batch_size=1)
    assert probs.shape == (2, len(LABELS)) and ((probs > 0) & (probs < 1)).all()
    with pytest.raises(EvaluationError, match=r"broken-page\.png"):
        predict_files(model, manifest, [*good, broken])


def test_expected_calibration_error_is_zero_when_calibrated_and_large_when_not() -> None:
    from model_training.evaluate import expected_calibration_error

    rng = np.random.default_rng(3)
    probs = rng.uniform(0, 1, 20_000)
    truth = rng.uniform(0, 1, 20_000) < probs  # outcomes drawn at the stated probability
    assert expected_calibration_error(truth, probs) < 0.02
    assert expected_calibration_error(truth, np.full(20_000, 0.99)) > 0.4  # always certain, right half the time
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0
