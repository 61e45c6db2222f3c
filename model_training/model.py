"""The classifier: a timm ConvNeXt with one logit per finding, and the tensor conversion it expects."""

from __future__ import annotations

from typing import Any

import numpy as np
import timm
import torch
from torch import nn


def trace_stem(in_chans: int, out_chans: int) -> nn.Module:
    """Stride-4 stem of two 3x3 convolutions, each followed by 2x2 max pooling.

    A strided convolution samples a one-pixel ECG trace at a quarter of its positions, so early
    layers see it broken up. Max pooling keeps every dark pixel; this is how a small plain CNN
    learns these pages in a few thousand steps while a patchify stem needs several times more.
    """
    mid = out_chans // 2
    return nn.Sequential(
        nn.Conv2d(in_chans, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(mid, out_chans, 3, padding=1, bias=False), nn.BatchNorm2d(out_chans), nn.GELU(), nn.MaxPool2d(2),
    )


def create_model(backbone: str, num_labels: int, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model; weights come from a bundle or from training, never a hub.

    `kwargs` go to timm (e.g. `norm_layer`, `ls_init_value`, `drop_path_rate`) and are kept in the bundle,
    except `stem="trace"`, which swaps a ConvNeXt's stride-4 stem for `trace_stem`.
    """
    stem = kwargs.pop("stem", None)
    model = timm.create_model(backbone, pretrained=False, num_classes=num_labels, in_chans=in_chans, **kwargs)
    if stem == "trace":
        model.stem = trace_stem(in_chans, model.feature_info[0]["num_chs"])
    elif stem is not None:
        raise ValueError(f"unknown stem {stem!r}; the only one is 'trace'")
    return model


def to_input(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 grayscale pages (N, H, W) -> float tensor (N, 1, H, W) with ink positive and paper at zero.

    Shared by training and every inference backend so the numbers fed to the network never drift.
    """
    batch = np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images)
    if batch.dtype != np.uint8 or batch.ndim != 3:
        raise ValueError(f"expected uint8 (N, H, W) pages, got {batch.dtype} {batch.shape}")
    tensor = torch.from_numpy(batch).unsqueeze(1).float()
    return (255.0 - tensor) / 255.0
