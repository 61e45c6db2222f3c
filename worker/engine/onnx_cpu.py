"""ONNX Runtime on the CPU, from the bundle's ONNX file (exported once into the cache when the bundle has none)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from model_training.bundle import load_manifest
from model_training.model import to_input


def onnx_path(bundle_dir: Path, cache_dir: Path | None) -> Path:
    """The bundle's own ONNX file, or one exported from its weights into `cache_dir/<version>/`."""
    manifest = load_manifest(bundle_dir)
    if manifest.onnx and (bundle_dir / manifest.onnx).exists():
        return bundle_dir / manifest.onnx
    from model_training.bundle import export_onnx, load_model

    target = (cache_dir or bundle_dir / ".cache") / manifest.version
    path = target / "model.onnx"
    if not path.exists():
        target.mkdir(parents=True, exist_ok=True)
        model, _ = load_model(bundle_dir)
        with tempfile.TemporaryDirectory(dir=target) as scratch:  # processes starting together never see half a file
            os.replace(export_onnx(model, manifest, Path(scratch)), path)
    return path


class OnnxEngine:
    name = "onnx"

    def __init__(self, bundle_dir: Path, threads: int = 0, batch_size: int = 8, cache_dir: Path | None = None) -> None:
        import onnxruntime

        self.manifest = load_manifest(bundle_dir)
        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(onnx_path(Path(bundle_dir), cache_dir)), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def predict(self, pages: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(pages), self.batch_size):
            batch = to_input(pages[start : start + self.batch_size]).numpy()
            logits = self.session.run(None, {self.input_name: batch})[0]
            outputs.append(1.0 / (1.0 + np.exp(-logits.astype(np.float64))))
        if not outputs:
            return np.zeros((0, len(self.manifest.labels)), np.float32)
        return np.concatenate(outputs).astype(np.float32)
