"""Operating points: how each finding's threshold is chosen, and the calibration it is chosen on.

Thresholds picked by Youden's J on our own renderer's pages flagged almost every page of another style.
A policy instead names what a finding must achieve on pooled validation pages of every drawing family
(for example MI at sensitivity >= 0.90, the others at specificity >= 0.90). First each label's logits
are calibrated (Platt scaling: a scale and a bias, fitted by scikit-learn's logistic regression on the
same pages), so that a probability means about the same on any paper; then the threshold is the one
that meets the policy on the calibrated probabilities. Both go into the manifest with what they achieved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, model_validator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve

from model_training.manifest import sigmoid


class OperatingPoint(BaseModel):
    """One of: a minimum sensitivity, a minimum specificity, or neither (Youden's J)."""

    sensitivity: float | None = None
    specificity: float | None = None

    @model_validator(mode="after")
    def _one_target(self) -> OperatingPoint:
        if self.sensitivity is not None and self.specificity is not None:
            raise ValueError("an operating point names a sensitivity or a specificity, not both")
        for value in (self.sensitivity, self.specificity):
            if value is not None and not 0 < value < 1:
                raise ValueError(f"a target must lie strictly between 0 and 1, not {value}")
        return self

    def describe(self) -> str:
        if self.sensitivity is not None:
            return f"sensitivity >= {self.sensitivity}"
        if self.specificity is not None:
            return f"specificity >= {self.specificity}"
        return "Youden's J"


def fit_calibration(y_true: np.ndarray, logits: np.ndarray, labels: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Per label [scale, bias] so that sigmoid(scale * logit + bias) matches the observed frequency.

    A label with one value in the set, or a fit that would invert the ranking, keeps the identity.
    """
    calibration = {}
    for i, label in enumerate(labels):
        column = np.asarray(y_true)[:, i].astype(int)
        if np.unique(column).size < 2:
            calibration[label] = (1.0, 0.0)
            continue
        fit = LogisticRegression(C=1e4, max_iter=1000).fit(np.asarray(logits)[:, i : i + 1].astype(np.float64), column)
        scale, bias = float(fit.coef_[0, 0]), float(fit.intercept_[0])
        calibration[label] = (scale, bias) if scale > 0 and math.isfinite(bias) else (1.0, 0.0)
    return calibration


def threshold_for(y_true: np.ndarray, probs: np.ndarray, point: OperatingPoint) -> float:
    """The threshold meeting `point` on these pages (predicted positive when prob >= threshold); 0.5 if undefined.

    For a sensitivity target it is the highest threshold that still reaches it, for a specificity target the
    lowest: each target is met with as few false alarms, or as few misses, as the pages allow.
    """
    y_true, probs = np.asarray(y_true).astype(int), np.asarray(probs, dtype=np.float64)
    if np.unique(y_true).size < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y_true, probs, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if point.sensitivity is not None:
        ok = np.flatnonzero(tpr >= point.sensitivity)
        return float(thresholds[ok[0]]) if ok.size else float(thresholds[-1])
    if point.specificity is not None:
        ok = np.flatnonzero(1 - fpr >= point.specificity)
        return float(thresholds[ok[-1]]) if ok.size else float(thresholds[0])
    j = tpr - fpr
    best = int(np.argmax(j))
    return float(thresholds[best]) if j[best] > 0 else 0.5


def choose_operating_points(y_true: np.ndarray, logits: np.ndarray, labels: Sequence[str],
                            policy: Mapping[str, OperatingPoint], pages: str
                            ) -> tuple[dict[str, tuple[float, float]], dict[str, float], dict[str, dict[str, Any]]]:
    """Calibration, thresholds and a record of each label's operating point, all from the same validation pages."""
    y_true, logits = np.asarray(y_true).astype(int), np.asarray(logits, dtype=np.float64)
    calibration = fit_calibration(y_true, logits, labels)
    thresholds, record = {}, {}
    for i, label in enumerate(labels):
        scale, bias = calibration[label]
        probs = sigmoid(logits[:, i] * scale + bias)
        point = policy.get(label, OperatingPoint())
        thresholds[label] = threshold_for(y_true[:, i], probs, point)
        hit, positive = probs >= thresholds[label], y_true[:, i] == 1
        record[label] = {
            "policy": point.describe(), "pages": pages, "n": len(probs),
            "sensitivity": round(float(hit[positive].mean()), 4) if positive.any() else None,
            "specificity": round(float((~hit[~positive]).mean()), 4) if (~positive).any() else None,
            "calibration": "platt",
        }
    return calibration, thresholds, record
