"""Morphology rather than style: which training signals and geometries read held-out drawing families best.

Every arm is the real trainer (`model_training.train.Trainer`) with a few settings changed, trained from
the same seed on the same pages of our renderer for the same number of pages seen; the learning curve
is scored on pages of our renderer it never saw and on two drawing families it never trained on
(dicomplot and ecgplot), so a row shows whether a change teaches the findings or our style. Arms:
  baseline     convnext_ecg at 256x352 (1.26 px/mm), classification loss only
  signal       + the signal head: each lead's median beat and the caliper measurements regressed
               from the image (`model.SignalHead`, dropped at export)
  distill      + targets mixed with the signal teacher's probabilities (trees on true-signal measurements)
  signal_distill  both
  hires        512x704 (2.5 px/mm) with a third stem pool, so later stages keep their receptive field in mm
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_training.config import TrainConfig
from model_training.pages import Source, load_pages
from model_training.train import Trainer

ARMS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "signal": {"signal_weight": 0.5},
    "distill": {"distill_weight": 0.5},
    "signal_distill": {"signal_weight": 0.5, "distill_weight": 0.5},
    "hires": {"input_size": (512, 704), "backbone_kwargs": {"stem_pools": 3}},
}
TRAIN = Source(kind="synthetic", n=2000, seed=101, artifacts="heavy", dpi=None)
IN_STYLE = Source(kind="synthetic", n=200, seed=202, artifacts="heavy", dpi=None)
HELD_OUT = {
    "dicomplot_heavy": Source(kind="synthetic", n=200, seed=206, artifacts="heavy", dpi=None, family="dicomplot"),
    "ecgplot_heavy": Source(kind="synthetic", n=150, seed=204, artifacts="heavy", dpi=None, family="ecgplot"),
}


def arm_config(arm: str, pages_seen: int, out_dir: Path, cache: Path, seed: int = 0) -> TrainConfig:
    """The stage 1 regime (AdamW 2e-3, warm-up, cosine, augmentation) with the arm's changes."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; available: {', '.join(ARMS)}")
    settings: dict[str, Any] = {
        "name": arm, "backbone": "convnext_ecg", "input_size": (256, 352), "data": [TRAIN],
        "validation": [IN_STYLE], "total_pages": pages_seen, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.01,
        "warmup_pages": 500, "eval_every_pages": 2000, "checkpoint_every_pages": 2000, "seed": seed,
        "out_dir": out_dir, "cache_dir": cache, "export": False, **ARMS[arm]}
    return TrainConfig.model_validate(settings)


def _evaluations(log: Path) -> list[dict[str, Any]]:
    """The run's evaluations by pages seen, over every resumed part of it (the last one at each point wins)."""
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    by_pages = {e["pages"]: e for e in entries if e.get("event") == "eval" and "monitor" in e}
    return [by_pages[pages] for pages in sorted(by_pages)]


def run_morphology_bench(arms: list[str], pages_seen: int = 6000, out_dir: Path = Path("runs/bench-morphology"),
                         cache: Path = Path("runs/cache"), json_out: Path | None = None,
                         on_arm: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """Train each arm in turn (resumable: a finished arm's checkpoint is reused); merged into `json_out`."""
    for arm in arms:
        arm_config(arm, pages_seen, out_dir, cache)  # unknown arms fail before any training
    report: dict[str, Any] = json.loads(json_out.read_text()) if json_out and json_out.exists() else {}
    report.update({"benchmark": "morphology", "pages_seen": pages_seen, "train": TRAIN.describe(),
                   "in_style": IN_STYLE.describe(), "held_out": {k: s.describe() for k, s in HELD_OUT.items()}})
    results = report.setdefault("arms", {})
    for arm in arms:
        config = arm_config(arm, pages_seen, out_dir, cache)
        monitor = {name: load_pages(source, config.input_size, config.preprocess_steps, cache)
                   for name, source in HELD_OUT.items()}
        started = time.perf_counter()
        Trainer(config, monitor=monitor).run()
        curve = _evaluations(config.run_dir / "log.jsonl")
        points = [{"pages": e["pages"], "minutes": e["minutes"], "in_style": e["macro_auroc"],
                   **{name: scores["macro_auroc"] for name, scores in e["monitor"].items()},
                   **({"signal_loss": e["signal_loss"]} if "signal_loss" in e else {})} for e in curve]
        final = curve[-1] if curve else {}
        held = [final["monitor"][name]["macro_auroc"] for name in HELD_OUT] if final else []
        results[arm] = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in ARMS[arm].items()},
                        "seconds": round(time.perf_counter() - started, 1), "curve": points,
                        "in_style": final.get("macro_auroc"), "in_style_per_class": final.get("per_class_auroc"),
                        "held_out": {name: final["monitor"][name] for name in HELD_OUT} if final else {},
                        "held_out_mean": round(sum(held) / len(held), 4) if held else None}
        if json_out:
            json_out.write_text(json.dumps(report, indent=2) + "\n")
        if on_arm:
            on_arm(arm, results[arm])
    return report
