"""Which ConvNeXt traits cost learning speed and transfer: short runs at equal pages seen.

Every arm trains in the same fixed regime as the reference CNN (`synth.reference.train_small_cnn`:
AdamW, one-cycle at 2e-3, batch 32, no augmentation) on the same cached pages of our renderer, and is
scored after every epoch on pages of our renderer it never saw and on pages of a drawing family it
never trained on (`synth.families`), clean and with artifacts. The arms start from `convnext_ecg`
and put back one of ConvNeXt's stock traits at a time, so each row prices one trait.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ingest.preprocess import STEPS
from model_training.model import create_model, to_input
from model_training.pages import Source, concatenate, load_pages
from model_training.synth.reference import small_cnn, train_small_cnn
from model_training.synth.signals import LABELS

STAGE1_ATTO = {"norm_layer": "batchnorm2d", "conv_mlp": True, "stem_type": "overlap_act", "global_pool": "avgmax"}
# name -> (timm backbone, kwargs); "small_cnn" is the five-block reference network.
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain_cnn": ("small_cnn", {}),
    "convnext_atto_stage1": ("convnext_atto", STAGE1_ATTO),
    "convnext_ecg": ("convnext_ecg", {}),
    "ecg_strided_downsample": ("convnext_ecg", {"downsample": "conv"}),
    "ecg_overlap_stem": ("convnext_ecg", {"stem": "overlap_act"}),
    "ecg_patch_stem": ("convnext_ecg", {"stem": "patch"}),
    "ecg_layer_scale": ("convnext_ecg", {"ls_init_value": 1e-6}),
    "ecg_atto_size": ("convnext_ecg", {"depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320]}),
    "ecg_layernorm": ("convnext_ecg", {"norm_layer": None}),
    "ecg_avgmax_pool": ("convnext_ecg", {"global_pool": "avgmax"}),
    "ecg_drop_path": ("convnext_ecg", {"drop_path_rate": 0.1}),
}


def build_arm(name: str) -> nn.Module:
    if name not in ARMS:
        raise ValueError(f"unknown arm {name!r}; available: {', '.join(ARMS)}")
    backbone, kwargs = ARMS[name]
    if backbone == "small_cnn":
        return small_cnn()
    return create_model(backbone, len(LABELS), 1, **kwargs)


TRAIN_FAMILIES = ("ours", "ecgplot", "both")


def bench_sources(train_n: int, val_n: int, train_family: str = "ours") -> tuple[list[Source], dict[str, Source]]:
    """Training pages of one family (or half of each); validation on both families, so one is held out.

    Training with `ours` (the default) or `ecgplot` gives the two rows of the leave-one-family-out table.
    """
    if train_family not in TRAIN_FAMILIES:
        raise ValueError(f"train_family must be one of {TRAIN_FAMILIES}, not {train_family!r}")
    ours = Source(kind="synthetic", n=train_n, seed=101, artifacts="heavy", dpi=150)
    foreign = Source(kind="synthetic", n=train_n, seed=105, artifacts="heavy", dpi=None, family="ecgplot")
    train = {"ours": [ours], "ecgplot": [foreign],
             "both": [ours.model_copy(update={"n": train_n // 2}),
                      foreign.model_copy(update={"n": train_n - train_n // 2})]}[train_family]
    validation = {
        "ours_heavy": Source(kind="synthetic", n=val_n, seed=202, artifacts="heavy", dpi=150),
        "ecgplot_clean": Source(kind="synthetic", n=val_n, seed=203, artifacts="none", dpi=None, family="ecgplot"),
        "ecgplot_heavy": Source(kind="synthetic", n=val_n, seed=204, artifacts="heavy", dpi=None, family="ecgplot"),
    }
    return train, validation


def run_recipe_bench(arms: list[str], train_n: int = 2000, val_n: int = 300, epochs: int = 3,
                     size: tuple[int, int] = (256, 352), cache: Path = Path("runs/cache"), seed: int = 0,
                     json_out: Path | None = None, on_arm: Callable[[str, dict], None] | None = None,
                     train_family: str = "ours") -> dict:
    """Train each arm in turn; results are merged into `json_out` after every arm, so a long run can stop.

    An arm trained on another family than `ours` is stored as `<arm>@<family>`.
    """
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; available: {', '.join(ARMS)}")
    train_sources, validation_sources = bench_sources(train_n, val_n, train_family)
    train = concatenate([load_pages(source, size, STEPS, cache) for source in train_sources])
    validation = {name: load_pages(source, size, STEPS, cache) for name, source in validation_sources.items()}
    report: dict[str, Any] = json.loads(json_out.read_text()) if json_out and json_out.exists() else {}
    report.update({"benchmark": "recipe", "regime": "AdamW, one-cycle 2e-3, batch 32, no augmentation",
                   "train_pages": train_n, "epochs": epochs, "input_size": list(size),
                   "validation": {name: source.describe() for name, source in validation_sources.items()}})
    results = report.setdefault("arms", {})
    for arm in arms:
        key = arm if train_family == "ours" else f"{arm}@{train_family}"
        torch.manual_seed(seed)  # the arm's initial weights, like the reference CNN's, follow the seed
        model = build_arm(arm)
        started = time.perf_counter()
        _, history = train_small_cnn(train.images, train.labels, epochs, seed,
                                     {name: (pages.images, pages.labels) for name, pages in validation.items()},
                                     model=model)
        final = history[-1]
        results[key] = {"backbone": ARMS[arm][0], "kwargs": ARMS[arm][1], "train": train.description,
                        "parameters": sum(p.numel() for p in model.parameters()),
                        "seconds": round(time.perf_counter() - started, 1), "train_seconds": final["train_seconds"],
                        **{name: final[name]["macro_auroc"] for name in validation}, "history": history}
        if json_out:
            json_out.write_text(json.dumps(report, indent=2) + "\n")
        if on_arm:
            on_arm(key, results[key])
    return report


def measure_speed(arms: list[str], size: tuple[int, int] = (256, 352), batch: int = 32, steps: int = 5,
                  json_out: Path | None = None) -> dict[str, float]:
    """Seconds per training step (forward, backward, AdamW) for each arm, back to back in one process.

    Wall times of the long runs depend on what else the machine did meanwhile; these are comparable as
    ratios because every arm is timed in the same minute.
    """
    images = np.random.default_rng(0).integers(0, 256, (batch, *size), dtype=np.uint8)
    inputs = to_input(images).contiguous(memory_format=torch.channels_last)
    targets = torch.zeros(batch, len(LABELS))
    seconds = {}
    for arm in arms:
        model = build_arm(arm).to(memory_format=torch.channels_last).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
        timings = []
        for _ in range(steps + 1):  # the first step allocates; it is not counted
            started = time.perf_counter()
            loss = nn.functional.binary_cross_entropy_with_logits(model(inputs), targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            timings.append(time.perf_counter() - started)
        seconds[arm] = round(float(np.median(timings[1:])), 3)
    if json_out:
        report = json.loads(json_out.read_text()) if json_out.exists() else {}
        report["step_seconds"] = {"batch": batch, "input_size": list(size), "threads": torch.get_num_threads(),
                                  **report.get("step_seconds", {}), **seconds}
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    return seconds


def summary_rows(report: dict) -> list[dict[str, Any]]:
    """One row per arm: final macro AUROC per validation set, and the mean over the family it did not train on."""
    rows = []
    speed = report.get("step_seconds", {})
    for key, result in report.get("arms", {}).items():
        arm, _, family = key.partition("@")
        held_out = {"": ["ecgplot_clean", "ecgplot_heavy"], "ecgplot": ["ours_heavy"], "both": []}[family]
        scores = [result[name] for name in held_out if result.get(name) is not None]
        rows.append({"arm": key, "parameters": result["parameters"], "train_seconds": result["train_seconds"],
                     "ours_heavy": result.get("ours_heavy"), "ecgplot_clean": result.get("ecgplot_clean"),
                     "ecgplot_heavy": result.get("ecgplot_heavy"),
                     "held_out_mean": round(float(np.mean(scores)), 4) if scores else None,
                     "step_seconds": speed.get(arm)})
    return rows
