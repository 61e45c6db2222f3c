"""The classifier: a timm ConvNeXt with one logit per finding, and the tensor conversion it expects.

`convnext_ecg` is a ConvNeXt registered with timm for line drawings learnt from scratch (no ImageNet
weights can be loaded here). It keeps ConvNeXt's blocks (7x7 depthwise convolution, BatchNorm,
inverted-bottleneck MLP, residuals) and changes what a thin pen trace on blank paper needs:
  stem="conv_pool"        two dense 3x3 conv-BN-ReLU layers, each followed by 2x2 max pooling, instead
                          of a strided patchify: the max of ink keeps a one-pixel trace through every
                          downscale, whatever its width was on paper
  downsample="maxpool"    between stages, 2x2 max pooling then a 1x1 convolution, instead of a strided
                          2x2 convolution
  small widths and depths, no layer scale: it learns from thousands of pages, not millions
docs/recipe.md has the measured cost of each trait.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import timm
import torch
from timm.models import register_model
from timm.models.convnext import ConvNeXt
from torch import nn

from model_training.manifest import to_input as pages_to_input

TIMM_STEMS = ("patch", "overlap", "overlap_tiered", "overlap_act")


def create_model(backbone: str, num_labels: int, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model; weights come from a bundle or from training, never a hub.

    `kwargs` go to timm (e.g. `norm_layer`, `ls_init_value`, `drop_path_rate`) and are kept in the bundle.
    """
    return timm.create_model(backbone, pretrained=False, num_classes=num_labels, in_chans=in_chans, **kwargs)


class ConvPoolStem(nn.Sequential):
    """Dense conv-BN-ReLU-maxpool layers, each halving: a 2**pools reduction that a thin trace survives.

    Two pools (4x) at 1.26 px/mm; three (8x) at twice the px/mm keep every later stage's receptive
    field the same in millimetres, with the extra full-resolution layer at half the width.
    """

    def __init__(self, in_chans: int, out_chs: int, pools: int = 2) -> None:
        widths = [max(8, out_chs >> (pools - 1 - i)) for i in range(pools)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_chans, *widths[:-1]], widths, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
        super().__init__(*layers)


def _pool_downsample(strided: nn.Sequential) -> nn.Sequential:
    """timm's (norm, 2x2 stride-2 conv) turned into (2x2 max pool, the same norm, 1x1 conv)."""
    norm, conv = strided[0], strided[1]
    return nn.Sequential(nn.MaxPool2d(2), norm, nn.Conv2d(conv.in_channels, conv.out_channels, 1,
                                                         bias=conv.bias is not None))


@register_model
def convnext_ecg(pretrained: bool = False, stem: str = "conv_pool", downsample: str = "maxpool",
                 stem_pools: int = 2, **kwargs: Any) -> ConvNeXt:
    """ConvNeXt for paper ECGs learnt from scratch; every timm ConvNeXt argument still applies."""
    if pretrained:
        raise ValueError("convnext_ecg has no pretrained weights; train it or load a bundle")
    for loader_option in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's, for hub weights
        kwargs.pop(loader_option, None)
    if stem not in (*TIMM_STEMS, "conv_pool"):
        raise ValueError(f"stem must be conv_pool or one of timm's {TIMM_STEMS}, not {stem!r}")
    if downsample not in ("maxpool", "conv"):
        raise ValueError(f"downsample must be maxpool or conv, not {downsample!r}")
    args: dict[str, Any] = {"depths": (1, 1, 3, 1), "dims": (32, 64, 128, 256), "conv_mlp": True,
                            "norm_layer": "batchnorm2d", "ls_init_value": None, "global_pool": "avg", **kwargs}
    model = ConvNeXt(stem_type=stem if stem in TIMM_STEMS else "patch", **args)
    if stem == "conv_pool":
        model.stem = ConvPoolStem(args.get("in_chans", 3), args["dims"][0], stem_pools)
    elif stem_pools != 2:
        raise ValueError("stem_pools applies to the conv_pool stem only")
    if downsample == "maxpool":
        for stage in list(model.stages)[1:]:
            if isinstance(stage.downsample, nn.Sequential):
                stage.downsample = _pool_downsample(stage.downsample)
    return model


class SignalHead(nn.Module):
    """Training-only head that reads the record's signal targets (`signal_targets`) back from the image.

    Each of 12 learnt lead queries attends over the last feature map (with a learnt position per
    cell, so it can find its lead on the page) and regresses that lead's median beat; the
    measurements come from the pooled map. It is dropped at export: the bundle holds the classifier.
    """

    def __init__(self, channels: int, grid: tuple[int, int], leads: int, beat_samples: int, measurements: int,
                 dim: int = 64) -> None:
        super().__init__()
        self.keys = nn.Conv2d(channels, dim, 1)
        self.values = nn.Conv2d(channels, dim, 1)
        self.position = nn.Parameter(torch.zeros(1, dim, *grid))
        self.queries = nn.Parameter(torch.randn(leads, dim) * dim**-0.5)
        self.beat = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, beat_samples))
        self.measurements = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, measurements))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) feature map -> (N, leads * beat_samples + measurements) standardised targets."""
        keys = (self.keys(features) + self.position).flatten(2)  # N, dim, h*w
        values = self.values(features).flatten(2)
        attention = torch.softmax(torch.einsum("ld,ndp->nlp", self.queries, keys) * keys.shape[1] ** -0.5, -1)
        per_lead = torch.einsum("nlp,ndp->nld", attention, values)
        beats = self.beat(per_lead).flatten(1)
        return torch.cat([beats, self.measurements(features.mean((2, 3)))], 1)


def to_input(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 grayscale pages (N, H, W) -> float tensor (N, 1, H, W) with ink positive and paper at zero.

    The numbers come from `model_training.manifest.to_input`, the one conversion every backend uses.
    """
    return torch.from_numpy(pages_to_input(images))
