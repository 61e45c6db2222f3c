"""Operating points and calibration: thresholds that meet a stated policy, probabilities that mean what they say."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from model_training.evaluate import expected_calibration_error, metrics
from model_training.manifest import Manifest, findings, probabilities, sigmoid
from model_training.operating import OperatingPoint, choose_operating_points, fit_calibration, threshold_for

LABELS = ["MI", "HYP"]


def _scores(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident logits: true log-odds 1.5 * z, reported as 4 * z + 2 (too sharp and shifted)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 2))
    y = (rng.random((n, 2)) < sigmoid(1.5 * z)).astype(int)
    return y, 4 * z + 2


def test_sensitivity_and_specificity_targets_are_met_as_tightly_as_the_pages_allow() -> None:
    y, logits = _scores()
    probs = sigmoid(logits[:, 0])
    for target in (0.8, 0.9, 0.95):
        t = threshold_for(y[:, 0], probs, OperatingPoint(sensitivity=target))
        hit = probs >= t
        assert hit[y[:, 0] == 1].mean() >= target
        # the next score up would miss the target: the tightest threshold that meets it
        assert (probs[y[:, 0] == 1] >= probs[probs > t].min()).mean() < target
        t = threshold_for(y[:, 0], probs, OperatingPoint(specificity=target))
        assert (probs[y[:, 0] == 0] < t).mean() >= target
        assert (probs[y[:, 0] == 0] < probs[probs < t].max()).mean() < target
    assert threshold_for(np.zeros(10, int), np.linspace(0, 1, 10), OperatingPoint(specificity=0.9)) == 0.5


def test_operating_point_takes_one_target_in_range() -> None:
    with pytest.raises(ValidationError, match="not both"):
        OperatingPoint(sensitivity=0.9, specificity=0.9)
    with pytest.raises(ValidationError, match="strictly between"):
        OperatingPoint(specificity=1.0)
    assert OperatingPoint().describe() == "Youden's J"


def test_platt_calibration_fixes_overconfident_logits() -> None:
    y, logits = _scores()
    calibration = fit_calibration(y, logits, LABELS)
    scale, bias = calibration["MI"]
    assert 0.3 < scale < 0.45 and -0.9 < bias < -0.4  # about 1.5/4 and -2 * 1.5/4
    manifest = Manifest(name="t", labels=LABELS, calibration=calibration)
    test_y, test_logits = _scores(seed=1)
    raw, calibrated = sigmoid(test_logits), probabilities(test_logits, manifest)
    for i in range(2):
        assert expected_calibration_error(test_y[:, i], calibrated[:, i]) < 0.03
        assert expected_calibration_error(test_y[:, i], raw[:, i]) > 0.08
        order = np.argsort(test_logits[:, i])
        assert (np.diff(calibrated[order, i]) >= 0).all()  # monotone: the ranking (AUROC) is unchanged


def test_chosen_points_are_recorded_and_served_through_probabilities_and_findings() -> None:
    y, logits = _scores()
    policy = {"MI": OperatingPoint(sensitivity=0.9), "HYP": OperatingPoint(specificity=0.95)}
    calibration, thresholds, record = choose_operating_points(y, logits, LABELS, policy, "pooled pages")
    assert record["MI"]["policy"] == "sensitivity >= 0.9" and record["MI"]["sensitivity"] >= 0.9
    assert record["HYP"]["specificity"] >= 0.95 and record["HYP"]["pages"] == "pooled pages"
    manifest = Manifest(name="t", labels=LABELS, calibration=calibration, thresholds=thresholds)
    probs = probabilities(logits, manifest)
    found = findings(probs, manifest)
    hyp = np.array(["HYP" in row for row in found])
    assert (~hyp[y[:, 1] == 0]).mean() == pytest.approx(record["HYP"]["specificity"], abs=1e-4)
    report = metrics(y, probs, LABELS, thresholds, n_bootstrap=0)
    assert report["sensitivity"]["MI"] == pytest.approx(record["MI"]["sensitivity"], abs=1e-4)
    normal = ~y.any(axis=1)
    expected = np.mean([not row for row, is_normal in zip(found, normal, strict=True) if is_normal])
    assert report["normal_no_flag"] == pytest.approx(expected, abs=1e-4)
    assert report["normal_pages"] == int(normal.sum())


def test_a_manifest_without_calibration_is_a_plain_sigmoid() -> None:
    logits = np.array([[-3.0, 0.0], [2.0, 40.0]])
    np.testing.assert_allclose(probabilities(logits, Manifest(name="t", labels=LABELS)), sigmoid(logits))
