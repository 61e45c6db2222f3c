"""TensorRT through torch-tensorrt: the bundle's graph compiled for this GPU in fp16, dynamic batch 1..max.

Compiling takes minutes, so the result is saved as an exported program under the cache directory,
keyed by the bundle's weights hash, the GPU model and the TensorRT version; a restart loads it in
seconds. Needs the `ecg-intake[tensorrt]` extra and a CUDA GPU (not available on the machines this
project is developed on; see the README).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from model_training.bundle import load_model
from model_training.manifest import MAX_BATCH
from worker.engine.base import BatchedEngine

log = logging.getLogger(__name__)


def is_available() -> str | None:
    if importlib.util.find_spec("torch_tensorrt") is None:
        return "torch_tensorrt not installed (pip install 'ecg-intake[tensorrt]')"
    return None if torch.cuda.is_available() else "no CUDA device"


def cache_key(version: str, gpu: str, trt_version: str, max_batch: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    return f"{version}-{slug}-trt{trt_version}-b{max_batch}.ep"


class TensorRTEngine(BatchedEngine):
    name = "tensorrt"

    def __init__(self, bundle_dir: Path, *, threads: int = 0, batch_size: int = 32, cache_dir: Path | None = None,
                 max_batch: int = 128) -> None:
        import tensorrt
        import torch_tensorrt

        model, self.manifest = load_model(bundle_dir)
        self.batch_size = min(batch_size, max_batch)
        shape = (self.manifest.in_chans, *self.manifest.input_size)
        folder = cache_dir or Path(bundle_dir) / ".cache"
        path = folder / cache_key(self.manifest.version, torch.cuda.get_device_name(), tensorrt.__version__,
                                  max_batch)
        if path.exists():
            log.info("tensorrt: loading the compiled engine from %s", path)
            self.module = torch.export.load(str(path)).module()
            return
        log.info("tensorrt: compiling %s for %s (fp16, batch 1..%d); this takes a few minutes once",
                 self.manifest.model_version, torch.cuda.get_device_name(), max_batch)
        model = model.cuda().eval()
        example = torch.rand(2, *shape, device="cuda")
        batch = torch.export.Dim("batch", min=1, max=min(max_batch, MAX_BATCH))
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        inputs = [torch_tensorrt.Input(min_shape=(1, *shape), opt_shape=(self.batch_size, *shape),
                                       max_shape=(max_batch, *shape), dtype=torch.float32)]
        self.module = torch_tensorrt.dynamo.compile(program, inputs=inputs, enabled_precisions={torch.float16},
                                                    min_block_size=1)
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch_tensorrt.save(self.module, str(partial), output_format="exported_program",
                            inputs=[torch.rand(self.batch_size, *shape, device="cuda")])
        os.replace(partial, path)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.module(torch.from_numpy(batch).to("cuda", non_blocking=True)).float().cpu().numpy()
