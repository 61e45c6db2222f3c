"""Gradient-boosted trees on hand-measured features: the signal teacher whose probabilities the image model may
be distilled towards (`TrainConfig.distill_weight`), and the baseline by which the tests show that the generated
findings are learnable from physiology."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from model_training.measure import measure
from model_training.synth.signals import generate_record


def feature_table(seeds: range | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Measured features (records x features) and multi-hot labels for generated records."""
    rows, labels = [], []
    for seed in seeds:
        record = generate_record(seed)
        rows.append(measure(record.signals, record.fs).vector())
        labels.append(record.multi_hot())
    return np.nan_to_num(np.stack(rows), nan=0.0, posinf=0.0, neginf=0.0), np.stack(labels)


def fit_feature_models(x: np.ndarray, y: np.ndarray) -> list[HistGradientBoostingClassifier]:
    """One gradient-boosted classifier per label on measured features."""
    return [HistGradientBoostingClassifier(max_iter=200, learning_rate=0.08, random_state=0).fit(x, y[:, index])
            for index in range(y.shape[1])]


def predict_feature_models(models: list[HistGradientBoostingClassifier], x: np.ndarray) -> np.ndarray:
    """(records, labels) probabilities."""
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return np.stack([model.predict_proba(x)[:, 1] for model in models], axis=1).astype(np.float32)
