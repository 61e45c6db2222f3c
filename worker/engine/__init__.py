"""Inference backends behind one interface; `load_engine` picks one and says why it skipped the others.

`auto` prefers, in order: tensorrt (GPU, compiled), cuda (GPU, fp16), onnx (ONNX Runtime on CPU),
cpu (PyTorch). A backend is skipped with a logged reason when its library or device is missing, or
when it fails to start; `cpu` always works and is the reference the others are checked against.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from model_training.bundle import Manifest

log = logging.getLogger(__name__)

AUTO_ORDER = ("tensorrt", "cuda", "onnx", "cpu")
KINDS = ("auto", *AUTO_ORDER)


class Engine(Protocol):
    name: str
    manifest: Manifest

    def predict(self, pages: np.ndarray) -> np.ndarray:
        """uint8 pages (N, H, W) at the manifest's input size -> probabilities (N, labels)."""
        ...


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def unavailable(kind: str) -> str | None:
    """Why `kind` cannot run on this machine, or None when it can be tried."""
    if kind == "tensorrt":
        if importlib.util.find_spec("torch_tensorrt") is None:
            return "torch_tensorrt not installed (pip install 'ecg-intake[tensorrt]')"
        return None if _cuda_available() else "no CUDA device"
    if kind == "cuda":
        return None if _cuda_available() else "no CUDA device"
    if kind == "onnx":
        return None if importlib.util.find_spec("onnxruntime") else "onnxruntime not installed (ecg-intake[onnx])"
    if kind == "cpu":
        return None
    raise ValueError(f"unknown engine {kind!r}; choose one of {KINDS}")


def _bundle_has_onnx(bundle_dir: Path) -> bool:
    from model_training.bundle import load_manifest

    manifest = load_manifest(bundle_dir)
    return bool(manifest.onnx) and (Path(bundle_dir) / manifest.onnx).exists()


def build_engine(kind: str, bundle_dir: Path, threads: int, batch_size: int, cache_dir: Path | None) -> Engine:
    """One named backend, no fallback: `load_engine` and `bench engine` both start engines through this."""
    if kind == "tensorrt":
        from worker.engine.tensorrt import TensorRTEngine

        return TensorRTEngine(bundle_dir, batch_size=batch_size, cache_dir=cache_dir)
    if kind == "cuda":
        from worker.engine.cuda import CudaEngine

        return CudaEngine(bundle_dir, batch_size=batch_size)
    if kind == "onnx":
        from worker.engine.onnx_cpu import OnnxEngine

        return OnnxEngine(bundle_dir, threads=threads, batch_size=batch_size, cache_dir=cache_dir)
    from worker.engine.torch_cpu import TorchCpuEngine

    return TorchCpuEngine(bundle_dir, threads=threads, batch_size=batch_size)


def load_engine(bundle_dir: Path, kind: str = "auto", threads: int = 0, batch_size: int = 8,
                cache_dir: Path | None = None) -> Engine:
    """The requested backend, or for `auto` the best one that starts here."""
    if kind != "auto":
        reason = unavailable(kind)
        if reason:
            raise RuntimeError(f"engine {kind} is not available: {reason}")
        return build_engine(kind, bundle_dir, threads, batch_size, cache_dir)
    for candidate in AUTO_ORDER:
        reason = unavailable(candidate)
        if reason is None and candidate == "onnx" and cache_dir is None and not _bundle_has_onnx(bundle_dir):
            reason = "the bundle has no ONNX file and no engine cache is set to export one into"
        if reason is None:
            try:
                engine = build_engine(candidate, bundle_dir, threads, batch_size, cache_dir)
            except Exception as exc:  # a broken GPU stack must not stop the worker: fall through to the next
                reason = f"failed to start: {type(exc).__name__}: {exc}"
            else:
                log.info("engine auto: using %s", candidate)
                return engine
        log.info("engine auto: %s skipped: %s", candidate, reason)
    raise RuntimeError("no engine could start")  # unreachable: cpu always starts or raises above
