"""PyTorch on a CUDA GPU: fp16 weights and activations, channels_last, optionally `torch.compile`d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model_training.bundle import load_model
from model_training.model import to_input


class CudaEngine:
    name = "cuda"

    def __init__(self, bundle_dir: Path, batch_size: int = 32, half: bool = True, compile: bool = False) -> None:
        model, self.manifest = load_model(bundle_dir)
        self.dtype = torch.float16 if half else torch.float32
        self.name = "cuda" if half else "cuda-fp32"
        self.model = model.to("cuda", dtype=self.dtype, memory_format=torch.channels_last).eval()
        if compile:
            self.model = torch.compile(self.model, mode="max-autotune-no-cudagraphs", dynamic=True)
        self.batch_size = batch_size

    @torch.inference_mode()
    def predict(self, pages: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(pages), self.batch_size):
            batch = to_input(pages[start : start + self.batch_size]).to("cuda", non_blocking=True)
            batch = batch.to(self.dtype).contiguous(memory_format=torch.channels_last)
            outputs.append(torch.sigmoid(self.model(batch).float()).cpu().numpy())
        if not outputs:
            return np.zeros((0, len(self.manifest.labels)), np.float32)
        return np.concatenate(outputs)
