"""Inference backends behind one interface; `load_engine` picks one and says why it skipped the others.

`auto` prefers, in order: tensorrt (GPU, compiled), cuda (GPU, fp16), onnx (ONNX Runtime on CPU),
cpu (PyTorch). A backend is skipped with a logged reason when its library or device is missing, or
when it fails to start; `cpu` runs wherever torch is installed and is the reference the others are
checked against.

`ENGINES` is the registry: name -> (module, class). Each backend module has `is_available()` (None when
it can run here, else the plain reason) and a class built on `worker.engine.base.BatchedEngine` whose
constructor is `(bundle_dir, *, threads, batch_size, cache_dir)`, so any kind starts the same way. A module
is imported only when its engine is asked about, so asking about onnx never imports torch, and importing
this package imports neither numpy nor the manifest: `worker.settings` takes `EngineKind` from here.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal, Protocol, get_args

if TYPE_CHECKING:
    import numpy as np

    from model_training.manifest import Manifest

log = logging.getLogger(__name__)

EngineKind = Literal["auto", "tensorrt", "cuda", "onnx", "cpu"]  # after `auto`, the order `auto` tries them in
KINDS: tuple[str, ...] = get_args(EngineKind)
AUTO_ORDER = KINDS[1:]
ENGINES: dict[str, tuple[str, str]] = {
    "tensorrt": ("worker.engine.tensorrt", "TensorRTEngine"),
    "cuda": ("worker.engine.cuda", "CudaEngine"),
    "onnx": ("worker.engine.onnx_cpu", "OnnxEngine"),
    "cpu": ("worker.engine.torch_cpu", "TorchCpuEngine"),
}


class Engine(Protocol):
    name: str
    manifest: Manifest

    def predict(self, pages: np.ndarray) -> np.ndarray:
        """uint8 pages (N, H, W) at the manifest's input size -> probabilities (N, labels)."""
        ...


def _module(kind: str) -> ModuleType:
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; choose one of {KINDS}")
    return importlib.import_module(ENGINES[kind][0])


def unavailable(kind: str) -> str | None:
    """Why `kind` cannot run on this machine, or None when it can be tried."""
    try:
        module = _module(kind)
    except ModuleNotFoundError as exc:  # e.g. torch missing from an ONNX-only install
        return f"{exc.name} not installed"
    return module.is_available()


def _bundle_reason(kind: str, bundle_dir: Path, cache_dir: Path | None) -> str | None:
    """Why `auto` would not start `kind` on this bundle although the machine could run it."""
    if kind != "onnx":
        return None
    from worker.engine.onnx_cpu import bundle_onnx

    if bundle_onnx(bundle_dir) is not None:
        return None
    if cache_dir is None:
        return "the bundle has no ONNX file and no engine cache is set to export one into"
    if importlib.util.find_spec("torch") is None:
        return "the bundle has no ONNX file and torch is not installed to export one"
    return None


def engine_report(bundle_dir: Path, cache_dir: Path | None = None) -> dict[str, str | None]:
    """Every engine in `auto`'s order -> None when `auto` could start it on this bundle here, else why not.

    Cheap: starts no engine, and reading the onnx entry imports no torch.
    """
    from model_training.manifest import BundleError

    report: dict[str, str | None] = {}
    for kind in AUTO_ORDER:
        reason = unavailable(kind)
        if reason is None:
            try:
                reason = _bundle_reason(kind, Path(bundle_dir), cache_dir)
            except BundleError as exc:
                reason = f"bundle unreadable: {exc}"
        report[kind] = reason
    return report


def build_engine(kind: str, bundle_dir: Path, threads: int, batch_size: int, cache_dir: Path | None) -> Engine:
    """One named backend, no fallback: `load_engine` and `bench engine` both start engines through this."""
    engine_class = getattr(_module(kind), ENGINES[kind][1])
    return engine_class(bundle_dir, threads=threads, batch_size=batch_size, cache_dir=cache_dir)


def load_engine(bundle_dir: Path, kind: str = "auto", threads: int = 0, batch_size: int = 8,
                cache_dir: Path | None = None) -> Engine:
    """The requested backend, or for `auto` the best one that starts here."""
    if kind != "auto":
        reason = unavailable(kind)
        if reason:
            raise RuntimeError(f"engine {kind} is not available: {reason}")
        return build_engine(kind, bundle_dir, threads, batch_size, cache_dir)
    for candidate in AUTO_ORDER:
        reason = unavailable(candidate) or _bundle_reason(candidate, Path(bundle_dir), cache_dir)
        if reason is None:
            try:
                engine = build_engine(candidate, bundle_dir, threads, batch_size, cache_dir)
            except Exception as exc:  # a broken GPU stack must not stop the worker: fall through to the next
                reason = f"failed to start: {type(exc).__name__}: {exc}"
            else:
                log.info("engine auto: using %s", candidate)
                return engine
        log.info("engine auto: %s skipped: %s", candidate, reason)
    raise RuntimeError("no engine could start (see the skipped reasons above)")
