"""Leave one drawing family out: train on every family but F, score on F and on the families it trained on.

The pages are the stage 1 preset's own (`presets/stage1.toml`), grouped by family, so the table describes
the data the shipped model learnt from and a cached preset costs no redrawing. Every row trains
`convnext_ecg` from the same seed in the recipe bench's fixed regime (`synth.reference.train_small_cnn`)
on the same number of pages, so rows differ only in which family was left out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_training.config import load_config
from model_training.model import create_model
from model_training.pages import PageSet, concatenate, load_pages
from model_training.synth.families import FAMILIES
from model_training.synth.reference import train_small_cnn
from model_training.synth.signals import LABELS


def _by_family(sources: list, config: Any) -> dict[str, PageSet]:
    grouped: dict[str, list[PageSet]] = {}
    for source in sources:
        pages = load_pages(source, config.input_size, config.preprocess_steps, config.cache_dir, config.workers)
        grouped.setdefault(source.family, []).append(pages)
    return {family: concatenate(sets) for family, sets in grouped.items()}


def run_leave_one_family_out(held_out: list[str] | None = None, train_pages: int = 1500, epochs: int = 3,
                             preset: str = "stage1", seed: int = 0, json_out: Path | None = None,
                             on_row: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """One row per held-out family; rows are merged into `json_out` as they finish, so a long run can stop."""
    config = load_config(Path(preset))
    train, validation = _by_family(config.data, config), _by_family(config.validation, config)
    families = [f for f in FAMILIES if f in train and f in validation]
    held_out = held_out or families
    unknown = [f for f in held_out if f not in families]
    if unknown:
        raise ValueError(f"families {unknown} are not in both the preset's data and validation; have {families}")
    report: dict[str, Any] = json.loads(json_out.read_text()) if json_out and json_out.exists() else {}
    report.update({"benchmark": "leave-one-family-out", "preset": preset, "backbone": "convnext_ecg",
                   "regime": "AdamW, one-cycle 2e-3, batch 32, no augmentation", "train_pages": train_pages,
                   "epochs": epochs, "input_size": list(config.input_size),
                   "validation": {f: validation[f].description for f in families}})
    rows = report.setdefault("rows", {})
    for family in held_out:
        others = [train[f] for f in families if f != family]
        pool = concatenate(others)
        chosen = np.sort(np.random.default_rng([seed, len(rows)]).permutation(len(pool))[:train_pages])
        images, labels = np.asarray(pool.images[chosen]), pool.labels[chosen]
        torch.manual_seed(seed)
        model = create_model("convnext_ecg", len(LABELS), 1)
        started = time.perf_counter()
        _, history = train_small_cnn(images, labels, epochs, seed,
                                     {f: (validation[f].images, validation[f].labels) for f in families}, model=model)
        final = history[-1]
        in_family = [final[f]["macro_auroc"] for f in families if f != family]
        rows[family] = {"trained_on": [f for f in families if f != family], "train": pool.description,
                        "pages": len(chosen), "seconds": round(time.perf_counter() - started, 1),
                        "held_out": final[family], "in_family_mean": round(float(np.mean(in_family)), 4),
                        "gap": round(float(np.mean(in_family)) - final[family]["macro_auroc"], 4),
                        "history": history}
        if json_out:
            json_out.write_text(json.dumps(report, indent=2) + "\n")
        if on_row:
            on_row(family, rows[family])
    return report
