"""The bundle's manifest and the numbers around the network: the contract between training and serving.

Like timm's pretrained configs, the manifest carries everything a caller needs (labels, thresholds,
input size, preprocessing version, backbone), so the worker never needs to know model internals.
This module is numpy and pydantic only, no torch: the ONNX engine serves a bundle with it alone.
`to_input` (pages -> network input) and `probabilities` (logits -> calibrated probabilities) are the one
definition of each step; training, evaluation and every engine go through them. `findings` (probabilities ->
the labels at their thresholds) is the one place the worker turns an engine's output into labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ingest.preprocess import PREPROCESS_VERSION, STEPS, Preparation

LABELS = ("MI", "AF", "STTC", "CD", "HYP")  # the five BHF findings; a bundle's own list is in its manifest
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
PROGRAM = "model.pt2"
ONNX = "model.onnx"
MAX_BATCH = 512


class BundleError(Exception):
    """A bundle that cannot be served as it is; the message says which field and why."""


class Manifest(BaseModel):
    name: str
    version: str = ""
    labels: list[str] = Field(default_factory=lambda: list(LABELS))
    thresholds: dict[str, float] = Field(default_factory=dict)
    # per label [scale, bias] on the logit (Platt scaling), fitted on validation pages; absent = identity
    calibration: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # per label: the policy its threshold was chosen by, on which pages, and what it achieved there
    operating_points: dict[str, dict[str, Any]] = Field(default_factory=dict)
    backbone: str = "convnext_atto"
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    in_chans: int = 1
    input_size: tuple[int, int] = (384, 512)
    preprocess_version: str = PREPROCESS_VERSION
    preprocess_steps: tuple[str, ...] = STEPS  # intake cleans pages with exactly the steps the model learnt on
    trained: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: str = ""
    command: str = ""
    git_commit: str = ""
    created: str = ""
    weights: str = WEIGHTS
    program: str | None = None  # torch.export program (.pt2), for the TensorRT and CUDA engines
    onnx: str | None = None  # ONNX file, for ONNX Runtime

    def threshold(self, label: str) -> float:
        return self.thresholds.get(label, 0.5)

    @property
    def model_version(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def preparation(self) -> Preparation:
        """How intake must prepare pages for this model: its input size and cleaning steps."""
        return Preparation(tuple(self.input_size), tuple(self.preprocess_steps))


def load_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise BundleError(f"no {MANIFEST} in bundle directory {directory}")
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: invalid manifest: {exc}") from exc


_read: dict[Path, tuple[tuple[int, int], Manifest]] = {}


def current_manifest(directory: Path) -> Manifest:
    """The bundle's manifest, read again only when its file changes (a new model was put in place)."""
    path = (Path(directory) / MANIFEST).resolve()
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise BundleError(f"no {MANIFEST} in bundle directory {directory}") from exc
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _read.get(path)
    if cached is None or cached[0] != key:
        cached = _read[path] = (key, load_manifest(directory))
    return cached[1]


def check_compatible(manifest: Manifest) -> None:
    """Refuse a bundle whose pages were prepared differently from what this code produces."""
    if manifest.preprocess_version != PREPROCESS_VERSION:
        raise BundleError(
            f"bundle {manifest.model_version} was trained with preprocessing version "
            f"{manifest.preprocess_version!r}, this code runs {PREPROCESS_VERSION!r}; retrain or use a matching bundle"
        )
    unknown = set(manifest.preprocess_steps) - set(STEPS)
    if unknown:
        raise BundleError(f"bundle {manifest.model_version} names unknown preprocessing steps {sorted(unknown)}")
    check_servable(manifest)


LABEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")  # a column, a JSON key and a CSV header everywhere
MIN_SIDE = 64  # the backbone downsamples 32x: smaller inputs leave no feature map


def check_servable(manifest: Manifest) -> None:
    """Refuse a bundle the service could not carry end to end: labels that cannot name a column, a
    threshold or calibration for a label the model does not have, an input too small for the backbone."""
    name = manifest.model_version
    labels = list(manifest.labels)
    if not labels:
        raise BundleError(f"bundle {name} has no labels")
    if len(set(labels)) != len(labels):
        raise BundleError(f"bundle {name} repeats a label: {labels}")
    bad = [label for label in labels if not LABEL_NAME.fullmatch(label)]
    if bad:
        raise BundleError(f"bundle {name}: labels {bad} are not names (a letter, then letters, digits or _; "
                          "at most 32)")
    strays = (set(manifest.thresholds) | set(manifest.calibration)) - set(labels)
    if strays:
        raise BundleError(f"bundle {name} sets thresholds or calibration for labels it does not have: "
                          f"{sorted(strays)}")
    height, width = manifest.input_size
    if min(height, width) < MIN_SIDE:
        raise BundleError(f"bundle {name}: input size {height}x{width} is below {MIN_SIDE} px on a side")


def to_input(pages: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """uint8 grayscale pages (N, H, W) -> float32 (N, 1, H, W) with ink positive and paper at zero.

    Shared by training and every inference backend so the numbers fed to the network never drift.
    """
    batch = np.asarray(np.stack(pages) if isinstance(pages, list | tuple) else pages)
    if batch.dtype != np.uint8 or batch.ndim != 3:
        raise ValueError(f"expected uint8 (N, H, W) pages, got {batch.dtype} {batch.shape}")
    return (np.float32(255.0) - batch[:, None].astype(np.float32)) / np.float32(255.0)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities as float32, computed in float64 without overflow for any logit."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64))).astype(np.float32)


def probabilities(logits: np.ndarray, manifest: Manifest | None = None) -> np.ndarray:
    """Logits (N, labels) -> probabilities through the manifest's per-label calibration (plain sigmoid without one).

    Every engine, the evaluator and the trainer's validation go through here, so a threshold chosen on
    calibrated probabilities is always compared with calibrated probabilities.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if manifest is None or not manifest.calibration:
        return sigmoid(logits)
    scale = np.array([manifest.calibration.get(label, (1.0, 0.0))[0] for label in manifest.labels])
    bias = np.array([manifest.calibration.get(label, (1.0, 0.0))[1] for label in manifest.labels])
    return sigmoid(logits * scale + bias)


def over_thresholds(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Boolean (N, labels): a label is predicted when its probability is at or above its threshold."""
    return np.asarray(probs, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)


def findings(probs: np.ndarray, manifest: Manifest) -> list[list[str]]:
    """Per row of probabilities, the manifest's labels at or above their thresholds, in manifest order."""
    predicted = over_thresholds(probs, [manifest.threshold(label) for label in manifest.labels])
    return [[label for label, hit in zip(manifest.labels, row, strict=True) if hit] for row in predicted]
