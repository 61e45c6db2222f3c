"""The classifier: a timm ConvNeXt with one logit per finding, and the tensor conversion it expects."""

from __future__ import annotations

from typing import Any

import numpy as np
import timm
import torch
from torch import nn


def create_model(backbone: str, num_labels: int, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model; weights come from a bundle or from training, never a hub.

    `kwargs` go to timm (e.g. `norm_layer`, `ls_init_value`, `drop_path_rate`) and are kept in the bundle.
    """
    return timm.create_model(backbone, pretrained=False, num_classes=num_labels, in_chans=in_chans, **kwargs)


def to_input(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 grayscale pages (N, H, W) -> float tensor (N, 1, H, W) with ink positive and paper at zero.

    Shared by training and every inference backend so the numbers fed to the network never drift.
    """
    batch = np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images)
    if batch.dtype != np.uint8 or batch.ndim != 3:
        raise ValueError(f"expected uint8 (N, H, W) pages, got {batch.dtype} {batch.shape}")
    tensor = torch.from_numpy(batch).unsqueeze(1).float()
    return (255.0 - tensor) / 255.0
