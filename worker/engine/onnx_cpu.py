"""ONNX Runtime on the CPU, from the bundle's ONNX file (exported once into the cache when the bundle has none).

Serving imports neither torch nor timm: the manifest, the input conversion and the sigmoid are numpy.
Only exporting a missing ONNX file needs torch, and imports it there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from model_training.manifest import Manifest, load_manifest
from worker.engine.base import BatchedEngine

log = logging.getLogger(__name__)


def is_available() -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime not installed (pip install 'ecg-intake[onnx]')"
    return None


def bundle_onnx(bundle_dir: Path, manifest: Manifest | None = None) -> Path | None:
    """The bundle's own ONNX file, when its manifest names one that exists."""
    manifest = manifest or load_manifest(bundle_dir)
    path = Path(bundle_dir) / manifest.onnx if manifest.onnx else None
    return path if path is not None and path.exists() else None


def onnx_path(bundle_dir: Path, cache_dir: Path | None) -> Path:
    """The bundle's own ONNX file, or one exported from its weights into `cache_dir/<version>/`."""
    manifest = load_manifest(bundle_dir)
    own = bundle_onnx(bundle_dir, manifest)
    if own is not None:
        return own
    from model_training.bundle import export_onnx, load_model  # torch: only to export a missing file

    target = (cache_dir or bundle_dir / ".cache") / manifest.version
    path = target / "model.onnx"
    if not path.exists():
        target.mkdir(parents=True, exist_ok=True)
        model, _ = load_model(bundle_dir)
        with tempfile.TemporaryDirectory(dir=target) as scratch:
            exported = export_onnx(model, manifest, Path(scratch))
            os.replace(exported, path)  # processes starting together never see half a file
    return path


class OnnxEngine(BatchedEngine):
    name = "onnx"

    def __init__(self, bundle_dir: Path, *, threads: int = 0, batch_size: int = 8, cache_dir: Path | None = None
                 ) -> None:
        import onnxruntime

        self.manifest = load_manifest(bundle_dir)
        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads that spin for the next batch burn the cores intake decodes on, in the same machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(onnx_path(Path(bundle_dir), cache_dir)), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]
