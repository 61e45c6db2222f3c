"""A training run described in one TOML or YAML file; presets for each stage live in `presets/`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from ingest.preprocess import STEPS
from model_training.operating import OperatingPoint
from model_training.pages import Source

PRESETS = Path(__file__).parent / "presets"


class TrainConfig(BaseModel):
    """Everything that decides what a run learns; the bundle records it so the run can be repeated."""

    name: str
    stage: Literal[1, 2] = 1
    backbone: str = "convnext_atto"
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    init: Path | None = Field(None, description="local weights: a bundle directory, checkpoint.pt or .safetensors")
    input_size: tuple[int, int] = (288, 576)
    preprocess_steps: tuple[str, ...] = STEPS

    data: list[Source]
    validation: list[Source]
    # per label; a label not named is set by Youden's J. Thresholds are chosen after calibration on `validation`.
    operating_points: dict[str, OperatingPoint] = Field(default_factory=dict)

    batch_size: int = 32
    total_pages: int = 20_000  # pages seen in all; epochs follow from the data size
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_pages: int = 2_000
    min_lr_ratio: float = 0.02  # cosine decays to lr * this
    clip_grad: float | None = 1.0
    ema_decay: float | None = None  # e.g. 0.999; evaluation and the bundle then use the averaged weights
    augment: bool = True
    seed: int = 0
    # Morphology losses from what the generator knows (pages with a known signal only; docs/recipe.md):
    signal_weight: float = 0.0  # weight of the signal head's loss (median beats and measurements); 0 = no head
    distill_weight: float = 0.0  # share of each finding's target taken from the signal teacher's probability
    teacher_records: int = 3000  # records the signal teacher (gradient-boosted trees on measurements) learns from

    eval_every_pages: int = 2_000
    checkpoint_every_pages: int = 2_000
    max_minutes: float | None = None  # stop cleanly (checkpoint saved) after this long; resume continues
    threads: int = 0
    workers: int | None = None  # processes that draw the page cache
    amp: Literal["auto", "off"] = "auto"  # bfloat16/float16 autocast on CUDA
    channels_last: bool = True  # about twice as fast for ConvNeXt on CPU as well as GPU

    out_dir: Path = Path("runs")
    cache_dir: Path = Path("runs/cache")
    bundle_dir: Path | None = None  # default <out_dir>/<name>/bundle
    export: bool = True  # also write the torch.export program and the ONNX file into the bundle

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.name

    @property
    def final_bundle_dir(self) -> Path:
        return self.bundle_dir or self.run_dir / "bundle"


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read TOML (`.toml`) or YAML; a bare name like `stage1` means `presets/stage1.toml`."""
    path = Path(path)
    if not path.exists() and (PRESETS / f"{path}.toml").exists():
        path = PRESETS / f"{path}.toml"
    text = path.read_text()
    raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    return TrainConfig.model_validate({**raw, **(overrides or {})})
