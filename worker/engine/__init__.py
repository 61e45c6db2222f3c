"""Inference backends behind one interface; `load_engine` picks one and says why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from model_training.bundle import Manifest

log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str
    manifest: Manifest

    def predict(self, pages: np.ndarray) -> np.ndarray:
        """uint8 pages (N, H, W) at the manifest's input size -> probabilities (N, labels)."""
        ...


def load_engine(bundle_dir: Path, kind: str = "auto", threads: int = 0, batch_size: int = 8) -> Engine:
    from worker.engine.torch_cpu import TorchCpuEngine

    if kind not in ("auto", "cpu"):
        raise ValueError(f"unknown engine {kind!r}")
    if kind == "auto":
        log.info("engine auto: using cpu (the GPU and ONNX backends are not built yet)")
    return TorchCpuEngine(bundle_dir, threads=threads, batch_size=batch_size)
