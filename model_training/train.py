"""The trainer: one loop for both stages, resumable from its checkpoint, logging every evaluation as JSONL.

Stage 1 learns from synthetic and external pages; stage 2 starts from stage 1's weights (`init`) and
fine-tunes on target-domain pages. Both write a bundle whose manifest carries the thresholds chosen
on the validation split, the validation metrics, the data description and the exact command.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from model_training.bundle import export_bundle, save_bundle
from model_training.config import TrainConfig
from model_training.evaluate import metrics
from model_training.manifest import LABELS, MANIFEST, WEIGHTS, Manifest, load_manifest, probabilities
from model_training.model import SignalHead, create_model, to_input
from model_training.operating import OperatingPoint, choose_operating_points
from model_training.pages import PageSet, concatenate, load_pages, load_targets
from model_training.signal_targets import BEAT_SAMPLES, LEADS, MEASUREMENTS, measurement_columns
from model_training.synth.dataset import item_seed
from model_training.synth.features import feature_table, fit_feature_models, predict_feature_models

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
TEACHER_SET = 977  # the signal teacher's records; no preset, bench or test set uses this set seed


def lr_at(pages: int, config: TrainConfig) -> float:
    """Linear warm-up over `warmup_pages`, then a cosine down to `lr * min_lr_ratio` at `total_pages`."""
    if pages < config.warmup_pages:
        return config.lr * max(pages / config.warmup_pages, 0.01)
    progress = min(1.0, (pages - config.warmup_pages) / max(1, config.total_pages - config.warmup_pages))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small shifts, zooms and tilts with white borders: what preprocessing leaves of scan-to-scan variation."""
    out = np.empty_like(images)
    height, width = images.shape[1:]
    for i, image in enumerate(images):
        scale, angle = rng.uniform(0.94, 1.06), rng.uniform(-1.0, 1.0)
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        matrix[:, 2] += rng.uniform(-0.03, 0.03, 2) * (width, height)
        out[i] = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=255)
    return out


def _initial_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        return load_file(str(path / WEIGHTS))
    if path.suffix == ".safetensors":
        return load_file(str(path))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint.get("ema_model") or checkpoint["model"]


def _architecture_from_init(config: TrainConfig) -> TrainConfig:
    """Stage 2 from a bundle takes the bundle's backbone unless the config names one, so presets need not repeat it."""
    if config.init is None or not (Path(config.init) / MANIFEST).exists():
        return config
    if {"backbone", "backbone_kwargs"} & config.model_fields_set:
        return config
    manifest = load_manifest(Path(config.init))
    return config.model_copy(update={"backbone": manifest.backbone, "backbone_kwargs": manifest.backbone_kwargs})


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on norms, biases and layer scales (1-D tensors), as timm does."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def recalibrate_bn(model: nn.Module, images: np.ndarray, device: torch.device, pages: int = 512,
                   batch_size: int = 32, seed: int = 0) -> bool:
    """Recompute BatchNorm running statistics for the weights as they are now; False if there is no BatchNorm.

    An EMA averages weights and running statistics separately, so its statistics belong to older
    weights: the first shipped model gave nearly the same probabilities for every page until its
    statistics were recomputed (README, "Why step 3").
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), min(pages, len(images)), replace=False))
    update_bn((to_input(np.array(images[chosen[i : i + batch_size]])) for i in range(0, len(chosen), batch_size)),
              model, device)
    model.eval()
    return True


def _operating_points(model: nn.Module, validation: PageSet, device: torch.device,
                      policy: dict[str, OperatingPoint]) -> dict[str, Any]:
    """Calibration and thresholds chosen on the validation split by `policy`, and the metrics at them."""
    logits = predict_logits(model, validation.images, device)
    truth = validation.labels.astype(int)
    calibration, thresholds, record = choose_operating_points(truth, logits, LABELS, policy, validation.description)
    probs = probabilities(logits, Manifest(name="validation", calibration=calibration))
    return {"calibration": calibration, "thresholds": thresholds, "operating_points": record,
            "scores": metrics(truth, probs, LABELS, thresholds, n_bootstrap=200)}


@torch.inference_mode()
def predict_logits(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 64) -> np.ndarray:
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = to_input(np.array(images[start : start + batch_size])).to(device)  # a copy: memmaps are read-only
        outputs.append(model(batch).float().cpu().numpy())
    return np.concatenate(outputs)


def predict(model: nn.Module, images: np.ndarray, device: torch.device, manifest: Manifest | None = None,
            batch_size: int = 64) -> np.ndarray:
    """Probabilities through `manifest`'s calibration (a plain sigmoid without one)."""
    return probabilities(predict_logits(model, images, device, batch_size), manifest)


class Trainer:
    """Holds the run's state so that `run` can stop at any checkpoint and a new process can resume it."""

    def __init__(self, config: TrainConfig, on_log: Callable[[dict[str, Any]], None] | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 monitor: dict[str, PageSet] | None = None) -> None:
        self.config = config
        self.on_log = on_log or (lambda _: None)
        self.progress = progress
        self.monitor = monitor or {}  # more page sets scored at every evaluation (e.g. held-out families)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.cuda = self.device.type == "cuda"
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        config.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = config.run_dir / "log.jsonl"
        torch.manual_seed(config.seed)
        config = self.config = _architecture_from_init(config)
        self.model = create_model(config.backbone, len(LABELS), 1, **config.backbone_kwargs).to(self.device)
        if config.init is not None:
            self.model.load_state_dict(_initial_weights(Path(config.init)))
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.signal_head = self._signal_head() if config.signal_weight > 0 else None
        trained = nn.ModuleList([self.model, self.signal_head]) if self.signal_head else self.model
        self.optimiser = torch.optim.AdamW(_param_groups(trained, config.weight_decay), lr=config.lr)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                 use_buffers=True) if config.ema_decay else None
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) \
            if self.cuda and config.amp == "auto" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.pages, self.epoch, self.offset, self.best = 0, 0, 0, 0.0

    def _signal_head(self) -> SignalHead:
        self.model.eval()  # a forward in training mode would move the BatchNorm statistics
        with torch.no_grad():
            shape = self.model.forward_features(torch.zeros(1, 1, *self.config.input_size, device=self.device)).shape
        return SignalHead(shape[1], tuple(shape[2:]), LEADS, BEAT_SAMPLES, MEASUREMENTS).to(self.device)

    # ---- data -----------------------------------------------------------------------------------
    def _load(self, sources: list, what: str) -> PageSet:
        sets = []
        for source in sources:
            total = source.n or 0
            callback = (lambda k, d=source.describe(), t=total: self.progress(f"{what}: {d}", k, t)) \
                if self.progress else None
            sets.append(load_pages(source, self.config.input_size, self.config.preprocess_steps, self.config.cache_dir,
                                   self.config.workers, progress=callback))
        return concatenate(sets)

    def _morphology_targets(self, train: PageSet) -> tuple[np.ndarray, np.ndarray | None]:
        """Training targets per page: labels mixed with the signal teacher's probabilities, and the
        standardised signal targets for the signal head (NaN rows where a page's signal is unknown)."""
        config = self.config
        targets = np.concatenate([load_targets(source, config.cache_dir, config.workers) for source in config.data])
        known = ~np.isnan(targets).any(axis=1)
        soft = train.labels.copy()
        if config.distill_weight > 0 and known.any():
            teacher = fit_feature_models(*feature_table([item_seed(TEACHER_SET, i)
                                                         for i in range(config.teacher_records)]))
            taught = predict_feature_models(teacher, measurement_columns(targets[known]))
            soft[known] = (1 - config.distill_weight) * train.labels[known] + config.distill_weight * taught
            agreement = metrics(train.labels[known].astype(int), taught, LABELS, dict.fromkeys(LABELS, 0.5),
                                n_bootstrap=0)
            self._log({"event": "teacher", "records": config.teacher_records, "pages": int(known.sum()),
                       "macro_auroc_on_train": agreement["macro_auroc"]})
        if self.signal_head is None:
            return soft, None
        mean, std = np.nanmean(targets, axis=0), np.nanstd(targets, axis=0)
        return soft, np.clip((targets - mean) / np.maximum(std, 1e-3), -5, 5).astype(np.float32)

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = self.config.run_dir / CHECKPOINT
        state = {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                 "signal_head": self.signal_head.state_dict() if self.signal_head else None,
                 "ema_model": self.ema.module.state_dict() if self.ema else None,
                 "ema": self.ema.state_dict() if self.ema else None, "scaler": self.scaler.state_dict(),
                 "pages": self.pages, "epoch": self.epoch, "offset": self.offset, "best": self.best,
                 "torch_rng": torch.get_rng_state(), "config": self.config.model_dump(mode="json")}
        partial = path.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, path)  # a crash mid-save leaves the previous checkpoint intact
        return path

    def resume(self) -> bool:
        path = self.config.run_dir / CHECKPOINT
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        if self.signal_head and state.get("signal_head"):
            self.signal_head.load_state_dict(state["signal_head"])
        self.optimiser.load_state_dict(state["optimiser"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.pages, self.epoch, self.offset, self.best = state["pages"], state["epoch"], state["offset"], state["best"]
        torch.set_rng_state(state["torch_rng"])
        self._log({"event": "resumed", "pages": self.pages})
        return True

    def _log(self, entry: dict[str, Any]) -> None:
        entry = {"time": round(time.time(), 1), **entry}
        with open(self.log_path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.on_log(entry)

    # ---- the loop -------------------------------------------------------------------------------
    def _batches(self, n: int):
        """Endless batches in a seeded order per epoch; `epoch` and `offset` make the stream resumable."""
        size = self.config.batch_size
        while True:
            order = np.random.default_rng([self.config.seed, self.epoch]).permutation(n)
            while self.offset + size <= n:
                batch = order[self.offset : self.offset + size]
                self.offset += size  # before the yield, so a checkpoint after this step resumes past it
                yield batch
            self.epoch, self.offset = self.epoch + 1, 0

    def _step(self, images: np.ndarray, labels: np.ndarray, loss_fn: nn.Module,
              signal: np.ndarray | None = None) -> tuple[float, float]:
        """One optimiser step; returns the classification loss and the signal head's loss (0 without one)."""
        self.model.train()
        for group in self.optimiser.param_groups:
            group["lr"] = lr_at(self.pages, self.config)
        inputs, targets = to_input(images).to(self.device), torch.from_numpy(labels).to(self.device)
        if self.config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        signal_loss = torch.zeros((), device=self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            features = self.model.forward_features(inputs)
            classification = loss_fn(self.model.forward_head(features).float(), targets)
            loss = classification
            if self.signal_head is not None and signal is not None:
                known = torch.from_numpy(~np.isnan(signal).any(axis=1)).to(self.device)
                if known.any():
                    wanted = torch.from_numpy(np.nan_to_num(signal)).to(self.device)[known]
                    signal_loss = nn.functional.mse_loss(self.signal_head(features[known]).float(), wanted)
                    loss = classification + self.config.signal_weight * signal_loss
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip_grad:
            self.scaler.unscale_(self.optimiser)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.scaler.step(self.optimiser)
        self.scaler.update()
        if self.ema:
            self.ema.update_parameters(self.model)
        return float(classification.detach()), float(signal_loss.detach())

    def evaluation_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    def evaluate(self, data: PageSet, train: PageSet) -> dict[str, Any]:
        if self.ema:
            recalibrate_bn(self.ema.module, train.images, self.device, seed=self.pages)
        def score(pages: PageSet) -> dict[str, Any]:
            probs = predict(self.evaluation_model(), pages.images, self.device)
            scores = metrics(pages.labels.astype(int), probs, LABELS, dict.fromkeys(LABELS, 0.5), n_bootstrap=0)
            return {"macro_auroc": scores["macro_auroc"], "per_class_auroc": scores["per_class_auroc"]}

        result = score(data)
        if self.monitor:
            result["monitor"] = {name: score(pages) for name, pages in self.monitor.items()}
        return result

    def run(self, resume: bool = True) -> dict[str, Any]:
        """Train to `total_pages` (or `max_minutes`), then write the bundle; returns the final summary."""
        config = self.config
        if resume:
            self.resume()
        train, validation = self._load(config.data, "train pages"), self._load(config.validation, "validation")
        if len(train) < config.batch_size:
            raise ValueError(f"{len(train)} training pages is fewer than one batch of {config.batch_size}")
        self._log({"event": "start", "stage": config.stage, "train_pages": len(train),
                   "validation_pages": len(validation), "data": train.description, "device": str(self.device)})
        loss_fn = nn.BCEWithLogitsLoss()
        morphology = config.signal_weight > 0 or config.distill_weight > 0
        train_targets, signal = self._morphology_targets(train) if morphology else (train.labels, None)
        rng = np.random.default_rng([config.seed, self.pages])
        started, losses, signal_losses = time.monotonic(), [], []
        next_eval = (self.pages // config.eval_every_pages + 1) * config.eval_every_pages
        next_checkpoint = (self.pages // config.checkpoint_every_pages + 1) * config.checkpoint_every_pages
        stopped_early = False
        for batch in self._batches(len(train)):
            if self.pages >= config.total_pages:
                break
            if config.max_minutes and time.monotonic() - started > 60 * config.max_minutes:
                stopped_early = True
                break
            chosen = np.sort(batch)
            images = np.asarray(train.images[chosen])
            if config.augment:
                images = augment(images, rng)
            loss, signal_loss = self._step(images, train_targets[chosen], loss_fn,
                                           None if signal is None else signal[chosen])
            losses.append(loss)
            signal_losses.append(signal_loss)
            self.pages += len(batch)
            if self.progress:
                self.progress("training", len(batch), config.total_pages)
            if self.pages >= next_eval or self.pages >= config.total_pages:
                scores = self.evaluate(validation, train)
                self.best = max(self.best, scores["macro_auroc"])
                self._log({"event": "eval", "pages": self.pages, "epoch": self.epoch, "lr": lr_at(self.pages, config),
                           "loss": round(float(np.mean(losses)), 4),
                           **({"signal_loss": round(float(np.mean(signal_losses)), 4)} if signal is not None else {}),
                           "minutes": round((time.monotonic() - started) / 60, 2), **scores})
                losses, signal_losses, next_eval = [], [], next_eval + config.eval_every_pages
            if self.pages >= next_checkpoint:
                self.save_checkpoint()
                next_checkpoint += config.checkpoint_every_pages
        self.save_checkpoint()
        if stopped_early:
            self._log({"event": "paused", "pages": self.pages, "reason": f"max_minutes={config.max_minutes}"})
            return {"finished": False, "pages": self.pages, "checkpoint": str(config.run_dir / CHECKPOINT)}
        return self.finish(train, validation)

    def finish(self, train: PageSet, validation: PageSet) -> dict[str, Any]:
        """Thresholds from the validation split, metrics, and the bundle."""
        config = self.config
        model = self.evaluation_model()
        if self.ema:
            recalibrate_bn(model, train.images, self.device, pages=2048)
        chosen = _operating_points(model, validation, self.device, config.operating_points)
        thresholds, scores = chosen["thresholds"], chosen["scores"]
        manifest = Manifest(name=config.name, backbone=config.backbone, backbone_kwargs=config.backbone_kwargs,
                            input_size=config.input_size, preprocess_steps=config.preprocess_steps,
                            labels=list(LABELS), thresholds=thresholds, calibration=chosen["calibration"],
                            operating_points=chosen["operating_points"], trained=True,
                            metrics={"validation": scores, "pages_seen": self.pages, "stage": config.stage},
                            data=f"train: {train.description}; validation: {validation.description}",
                            command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
        cpu_model = create_model(config.backbone, len(LABELS), 1, **config.backbone_kwargs)
        cpu_model.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
        saved = save_bundle(cpu_model.eval(), manifest, config.final_bundle_dir)
        if config.export:
            try:
                saved = export_bundle(config.final_bundle_dir)
            except Exception as exc:  # the weights are saved; an export can be retried with `ecg-intake model export`
                log.warning("bundle saved, but exporting it failed: %s", exc)
        (config.run_dir / "config.json").write_text(config.model_dump_json(indent=2) + "\n")
        self._log({"event": "bundle", "path": str(config.final_bundle_dir), "model_version": saved.model_version,
                   "macro_auroc": scores["macro_auroc"], "thresholds": thresholds})
        return {"finished": True, "pages": self.pages, "bundle": str(config.final_bundle_dir),
                "model_version": saved.model_version, "validation": scores}


def train(config: TrainConfig, resume: bool = True, on_log: Callable[[dict[str, Any]], None] | None = None,
          progress: Callable[[str, int, int], None] | None = None,
          monitor: dict[str, PageSet] | None = None) -> dict[str, Any]:
    return Trainer(config, on_log, progress, monitor).run(resume=resume)


def recalibrate_bundle(bundle_dir: Path, config: TrainConfig, pages: int = 2048) -> Manifest:
    """Fix a bundle's BatchNorm statistics on `config`'s training pages; thresholds and metrics anew on its validation.

    For bundles trained before `recalibrate_bn` ran at the end of training. Writes a new version in place.
    """
    from model_training.bundle import load_model

    model, manifest = load_model(bundle_dir)
    device = torch.device("cpu")
    def pages_of(sources: list) -> PageSet:
        return concatenate([load_pages(source, manifest.input_size, manifest.preprocess_steps, config.cache_dir,
                                       config.workers) for source in sources])

    train_pages, validation = pages_of(config.data), pages_of(config.validation)
    if not recalibrate_bn(model, train_pages.images, device, pages=pages):
        raise ValueError(f"bundle {manifest.model_version} has no BatchNorm to recalibrate")
    chosen = _operating_points(model, validation, device, config.operating_points)
    manifest = manifest.model_copy(update={
        "thresholds": chosen["thresholds"], "calibration": chosen["calibration"],
        "operating_points": chosen["operating_points"], "program": None, "onnx": None,
        "metrics": {**manifest.metrics, "validation": chosen["scores"], "recalibrated_on": train_pages.description},
        "command": f"{manifest.command}; then " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])})
    return save_bundle(model, manifest, bundle_dir)
