"""Grad-CAM on demand: where in the cleaned page the model looked for its strongest finding.

Computed with the torch model of the bundle that read the page on the stored model input and cached as a PNG under
`<home>/gradcam/<model_version>/<page_id>.png`: an RGBA heatmap the page view lays over the cleaned
image. Hooks sit on the last feature stage (`model.stages[-1]` of the timm ConvNeXt), the finest map
that still sees the whole 12-lead layout.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # torch loads on the first Grad-CAM request, not when the server starts
    from torch import nn

    from model_training.manifest import Manifest


def heatmap(model: nn.Module, page: np.ndarray, label_index: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM of one uint8 page (H, W) -> (map in [0, 1] at the page's size, the label index explained).

    Without `label_index` the label with the highest logit is explained.
    """
    import torch
    from torch.nn import functional as F

    from model_training.model import to_input

    kept: dict[str, torch.Tensor] = {}
    handle = model.stages[-1].register_forward_hook(lambda _m, _i, output: kept.__setitem__("activation", output))
    try:
        with torch.enable_grad():
            logits = model(to_input(page[None]))
            index = int(logits[0].argmax()) if label_index is None else label_index
            (gradient,) = torch.autograd.grad(logits[0, index], kept["activation"])  # no weight gradients kept
    finally:
        handle.remove()
    activation = kept["activation"].detach()
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=page.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam), index


def overlay_png(cam: np.ndarray) -> bytes:
    """The map as an RGBA PNG: jet colours, transparent where the model did not look."""
    colours = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (np.clip(cam, 0, 1) * 170).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", np.dstack([colours, alpha]))
    if not ok:
        raise RuntimeError("could not encode the Grad-CAM PNG")
    return encoded.tobytes()


class GradCam:
    """The model last asked for, loaded on request, and the cache of computed overlays."""

    def __init__(self, cache_dir: Path, threads: int = 0) -> None:
        self.cache_dir, self.threads = cache_dir, threads
        self._lock = threading.Lock()  # one backward pass at a time through the one model
        self._model: tuple[Path, nn.Module, Manifest] | None = None

    def _loaded(self, bundle_dir: Path) -> tuple[nn.Module, Manifest]:
        if self._model is None or self._model[0] != bundle_dir:
            import torch

            from model_training.bundle import load_model

            if self.threads:
                torch.set_num_threads(self.threads)
            self._model = (bundle_dir, *load_model(bundle_dir))
        return self._model[1], self._model[2]

    def png(self, page_id: int, image_path: Path, bundle_dir: Path) -> Path:
        """The cached overlay of a page under the model of `bundle_dir`, computed first if needed."""
        with self._lock:
            model, manifest = self._loaded(Path(bundle_dir))
            folder = self.cache_dir / re.sub(r"[^A-Za-z0-9@._-]", "_", manifest.model_version)
            target = folder / f"{page_id}.png"
            if target.is_file():
                return target
            page = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
            if page is None:
                raise FileNotFoundError(image_path)
            height, width = manifest.input_size
            small = page if page.shape == (height, width) else cv2.resize(page, (width, height),
                                                                            interpolation=cv2.INTER_AREA)
            cam, _ = heatmap(model, small)
            if small.shape != page.shape:
                cam = cv2.resize(cam, (page.shape[1], page.shape[0]), interpolation=cv2.INTER_LINEAR)
            folder.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            partial.write_bytes(overlay_png(cam))
            partial.replace(target)  # readers never see half a file
            return target
