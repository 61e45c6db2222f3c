"""The loop every backend shares: pages in batches -> `to_input` -> the forward pass -> calibrated probabilities.

A backend subclasses `BatchedEngine`, takes `(bundle_dir, *, threads, batch_size, cache_dir)` (ignoring what
it does not use, so the registry starts every kind alike) and supplies only `_forward`: float32 input
(n, 1, H, W) -> logits (n, labels) as a numpy array. Conversion, batching and the probabilities are the same
code for all of them, so backends differ only in how they run the network. Nothing here imports torch.
"""

from __future__ import annotations

import numpy as np

from model_training.manifest import Manifest, probabilities, to_input


class BatchedEngine:
    name: str
    manifest: Manifest
    batch_size: int

    def predict(self, pages: np.ndarray) -> np.ndarray:
        """uint8 pages (N, H, W) at the manifest's input size -> probabilities (N, labels), float32."""
        logits = [self._forward(to_input(pages[start : start + self.batch_size]))
                  for start in range(0, len(pages), self.batch_size)]
        if not logits:
            return np.zeros((0, len(self.manifest.labels)), np.float32)
        return probabilities(np.concatenate(logits), self.manifest)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """float32 (n, 1, H, W) -> logits (n, labels)."""
        raise NotImplementedError
