"""PyTorch on a CUDA GPU: fp16 weights and activations, channels_last, optionally `torch.compile`d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model_training.bundle import load_model
from worker.engine.base import BatchedEngine


def is_available() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device"


class CudaEngine(BatchedEngine):
    name = "cuda"

    def __init__(self, bundle_dir: Path, *, threads: int = 0, batch_size: int = 32, cache_dir: Path | None = None,
                 half: bool = True, compile: bool = False) -> None:
        model, self.manifest = load_model(bundle_dir)
        self.dtype = torch.float16 if half else torch.float32
        self.name = "cuda" if half else "cuda-fp32"
        self.model = model.to("cuda", dtype=self.dtype, memory_format=torch.channels_last).eval()
        if compile:
            self.model = torch.compile(self.model, mode="max-autotune-no-cudagraphs", dynamic=True)
        self.batch_size = batch_size

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(batch).to("cuda", non_blocking=True)
        inputs = inputs.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(inputs).float().cpu().numpy()
