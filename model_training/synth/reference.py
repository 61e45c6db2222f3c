"""How hard is the synthetic set? A small five-block CNN trained for a fixed budget, scored on unseen seeds.

This is the yardstick the README reports: a crude generator is learnt to macro AUROC ~0.999 by such a
network in minutes, which says nothing about real ECGs; ours should leave headroom.
"""

from __future__ import annotations

import csv
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from ingest.preprocess import preprocess
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


def _load(folder: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    with open(folder / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    images = np.stack([preprocess(cv2.imread(str(folder / r["file"])), size) for r in rows])
    labels = np.array([[int(r[label]) for label in LABELS] for r in rows], dtype=np.float32)
    return images, labels


def run_reference(train_n: int = 3000, test_n: int = 600, epochs: int = 4, size: tuple[int, int] = (256, 352),
                  artifacts: str = "heavy", dpi: int = 150, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "train", train_n, ("jpg",), artifacts, seed=101, dpi=dpi)
        write_dataset(Path(tmp) / "test", test_n, ("jpg",), artifacts, seed=202, dpi=dpi)
        x_train, y_train = _load(Path(tmp) / "train", size)
        x_test, y_test = _load(Path(tmp) / "test", size)
    model = small_cnn()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * int(np.ceil(train_n / 32))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss()
    started, history = time.perf_counter(), []
    for epoch in range(epochs):
        model.train()
        order = np.random.default_rng(epoch).permutation(train_n)
        for start in range(0, train_n, 32):
            batch = order[start : start + 32]
            loss = loss_fn(model(to_input(x_train[batch])), torch.from_numpy(y_train[batch]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        scores = evaluate(model, x_test, y_test)
        history.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - started, 1), **scores})
    return {"train_pages": train_n, "test_pages": test_n, "epochs": epochs, "input_size": list(size),
            "artifacts": artifacts, "dpi": dpi, "history": history, **history[-1]}


@torch.inference_mode()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> dict:
    model.eval()
    probs = np.concatenate([torch.sigmoid(model(to_input(images[i : i + 64]))).numpy()
                            for i in range(0, len(images), 64)])
    per_class = {label: round(float(roc_auc_score(labels[:, k], probs[:, k])), 4) for k, label in enumerate(LABELS)}
    return {"macro_auroc": round(float(np.mean(list(per_class.values()))), 4), "per_class_auroc": per_class}
