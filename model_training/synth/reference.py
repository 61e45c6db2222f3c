"""How hard is the synthetic set? A small five-block CNN trained for a fixed budget, scored on unseen seeds.

This is the yardstick the README reports: a crude generator is learnt to macro AUROC ~0.999 by such a
network in minutes, which says nothing about real ECGs; ours should leave headroom.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ingest.preprocess import letterbox, preprocess, to_gray
from model_training.evaluate import metrics
from model_training.model import to_input
from model_training.synth.dataset import write_dataset
from model_training.synth.signals import LABELS


def small_cnn(num_labels: int = len(LABELS)) -> nn.Module:
    layers: list[nn.Module] = []
    channels = [1, 16, 32, 64, 96, 128]
    for c_in, c_out in pairwise(channels):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], num_labels))


Cleaner = Callable[[np.ndarray, tuple[int, int]], np.ndarray]


def _load(folder: Path, size: tuple[int, int], cleaner: Cleaner = preprocess) -> tuple[np.ndarray, np.ndarray]:
    with open(folder / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    images = np.stack([cleaner(cv2.imread(str(folder / r["file"])), size) for r in rows])
    labels = np.array([[int(r[label]) for label in LABELS] for r in rows], dtype=np.float32)
    return images, labels


def train_small_cnn(x_train: np.ndarray, y_train: np.ndarray, epochs: int, seed: int = 0,
                    evaluate_on: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                    model: nn.Module | None = None) -> tuple[nn.Module, list]:
    """A fixed budget: AdamW, one-cycle at 2e-3, batch 32; scores on `evaluate_on` after each epoch.

    `model` (default: `small_cnn`) lets the recipe bench train any network in exactly this regime.
    """
    torch.manual_seed(seed)
    model = (model or small_cnn()).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(x_train) / 32))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss()
    started, history, train_seconds = time.perf_counter(), [], 0.0
    for epoch in range(epochs):
        model.train()
        epoch_started = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(len(x_train))
        for start in range(0, len(x_train), 32):
            batch = np.sort(order[start : start + 32])
            inputs = to_input(np.asarray(x_train[batch])).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(inputs), torch.from_numpy(y_train[batch]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        train_seconds += time.perf_counter() - epoch_started
        scores = {name: evaluate(model, *data) for name, data in (evaluate_on or {}).items()}
        history.append({"epoch": epoch + 1, "pages_seen": (epoch + 1) * len(x_train),
                        "seconds": round(time.perf_counter() - started, 1), "train_seconds": round(train_seconds, 1),
                        **scores})
    return model, history


def run_reference(train_n: int = 3000, test_n: int = 600, epochs: int = 4, size: tuple[int, int] = (256, 352),
                  artifacts: str = "heavy", dpi: int = 150, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "train", train_n, ("jpg",), artifacts, seed=101, dpi=dpi)
        write_dataset(Path(tmp) / "test", test_n, ("jpg",), artifacts, seed=202, dpi=dpi)
        x_train, y_train = _load(Path(tmp) / "train", size)
        x_test, y_test = _load(Path(tmp) / "test", size)
    _, history = train_small_cnn(x_train, y_train, epochs, seed, {"test": (x_test, y_test)})
    history = [{"epoch": h["epoch"], "seconds": h["seconds"], **h["test"]} for h in history]
    return {"train_pages": train_n, "test_pages": test_n, "epochs": epochs, "input_size": list(size),
            "artifacts": artifacts, "dpi": dpi, "history": history, **history[-1]}


def plain(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """No cleaning at all: luminance and letterbox, the baseline of the ablation."""
    return letterbox(to_gray(image), size)


def run_ablation(train_n: int = 3000, test_n: int = 600, epochs: int = 4, size: tuple[int, int] = (256, 352),
                 dpi: int = 150, seed: int = 0) -> dict:
    """The same network and budget trained on heavy-artifact pages, with and without `preprocess`.

    Scored on unseen heavy-artifact pages and on clean ones (cleaning must not hurt a clean page).
    """
    arms: dict[str, Cleaner] = {"none": plain, "all_steps": preprocess}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"train": (train_n, "heavy", 111), "heavy": (test_n, "heavy", 212), "clean": (test_n, "none", 213)}
        for name, (n, artifacts, set_seed) in folders.items():
            write_dataset(Path(tmp) / name, n, ("jpg",), artifacts, seed=set_seed, dpi=dpi)
        results = {}
        for arm, cleaner in arms.items():
            started = time.perf_counter()
            data = {name: _load(Path(tmp) / name, size, cleaner) for name in folders}
            prep_seconds = time.perf_counter() - started
            _, history = train_small_cnn(*data["train"], epochs, seed,
                                         {"heavy": data["heavy"], "clean": data["clean"]})
            results[arm] = {"heavy": history[-1]["heavy"], "clean": history[-1]["clean"],
                            "preprocess_seconds": round(prep_seconds, 1), "history": history}
    return {"benchmark": "preprocess_ablation", "model": "small five-block CNN (reference.py)",
            "train_pages": train_n, "test_pages_per_set": test_n, "epochs": epochs, "input_size": list(size),
            "dpi": dpi, "train_artifacts": "heavy", "arms": results,
            "gain_heavy": round(results["all_steps"]["heavy"]["macro_auroc"] - results["none"]["heavy"]["macro_auroc"],
                                4),
            "gain_clean": round(results["all_steps"]["clean"]["macro_auroc"] - results["none"]["clean"]["macro_auroc"],
                                4)}


@torch.inference_mode()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> dict:
    """Macro and per-class AUROC; a class with one value in the set has none and stays out of the macro."""
    model.eval()
    probs = np.concatenate([torch.sigmoid(model(to_input(np.array(images[i : i + 64])))).numpy()
                            for i in range(0, len(images), 64)])
    scores = metrics(labels, probs, LABELS, dict.fromkeys(LABELS, 0.5), n_bootstrap=0)
    return {"macro_auroc": scores["macro_auroc"], "per_class_auroc": scores["per_class_auroc"]}
