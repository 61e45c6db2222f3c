"""Training pages from every source the trainer accepts, preprocessed once and cached on disk.

A source is one of
  synthetic  records from `model_training.synth`, drawn by the paper renderer with artifacts
  ptbxl      a PTB-XL-format WFDB folder (a real download or `ecg-intake synth --formats wfdb`),
             labels mapped through scp_statements.csv, drawn by the same renderer
  folder     labelled page files (`labels.csv` with a `file` column, as `ecg-intake synth` writes it,
             or as `ecg-intake train` exports reviewed pages from the database)
Every page goes through `ingest.preprocess` exactly as intake does. The result is a uint8 array
(N, H, W) memory-mapped from `<cache>/<key>.npy`, so a resumed or repeated run does not redraw it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel

from ingest.decode import decode
from ingest.preprocess import PREPROCESS_VERSION, letterbox, preprocess
from model_training.parallel import parallel_map
from model_training.signal_targets import WIDTH, missing, record_targets
from model_training.synth import SYNTH_VERSION
from model_training.synth.dataset import item_seed
from model_training.synth.families import render_family
from model_training.synth.signals import LABELS, Record, generate_record


class Source(BaseModel):
    """One entry of a training config's `data` or `validation` list."""

    kind: Literal["synthetic", "ptbxl", "folder"]
    n: int | None = None  # synthetic: how many; ptbxl: at most this many records
    seed: int = 0  # synthetic set seed (sets never share records); page-style seed for ptbxl
    artifacts: Literal["none", "light", "heavy", "photo"] = "heavy"
    # drawing family (synthetic and ptbxl), see synth/families.py
    family: Literal["ours", "ecgplot", "dicomplot", "wfdbplot"] = "ours"
    dpi: int | None = 150  # None or 0 (TOML has no null): random 100-300 per page, as scans come
    path: Path | None = None  # ptbxl and folder
    folds: list[int] | None = None  # ptbxl strat_fold values to use
    prevalence: dict[str, float] | None = None
    normal_fraction: float | None = None
    preprocessed: bool = False  # folder: the files are model inputs already (reviewed pages), only resized

    def describe(self) -> str:
        if self.kind == "synthetic":
            family = "" if self.family == "ours" else f" family={self.family}"
            dpi = self.dpi or "random"
            return f"synthetic n={self.n} seed={self.seed} artifacts={self.artifacts} dpi={dpi}{family}"
        return f"{self.kind} {self.path}" + (f" folds={self.folds}" if self.folds else "")


@dataclass
class PageSet:
    images: np.ndarray  # uint8 (N, H, W), often a memmap
    labels: np.ndarray  # float32 (N, len(LABELS))
    description: str

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class _Job:
    kind: str
    index: int
    size: tuple[int, int]
    steps: tuple[str, ...]
    seed: int = 0
    artifacts: str = "heavy"
    family: str = "ours"
    dpi: int | None = None
    path: str = ""
    labels: tuple[int, ...] = ()
    prevalence: tuple[tuple[str, float], ...] | None = None
    normal_fraction: float | None = None
    preprocessed: bool = False


def _record(job: _Job) -> Record | None:
    """The 12-lead record a synthetic or PTB-XL page is drawn from; None for a folder page."""
    if job.kind == "synthetic":
        return generate_record(item_seed(job.seed, job.index),
                               prevalence=dict(job.prevalence) if job.prevalence else None,
                               normal_fraction=job.normal_fraction)
    if job.kind == "ptbxl":
        from model_training.ptbxl import read_signals

        signals, fs, leads = read_signals(Path(job.path).parent, Path(job.path).name)
        return Record(signals=signals, fs=fs, labels=dict(zip(LABELS, job.labels, strict=True)), subtypes=[],
                      variant="ptbxl", seed=job.index, params={}, leads=tuple(leads))
    return None


def _make(job: _Job) -> tuple[np.ndarray, np.ndarray]:
    record = _record(job)
    if record is not None:
        page_seed = item_seed(job.seed, job.index)
        image, _ = render_family(record, page_seed, job.family, job.artifacts, job.dpi)
        return preprocess(image, job.size, job.steps), record.multi_hot().astype(np.float32)
    labels = np.array(job.labels, dtype=np.float32)
    if job.preprocessed:
        gray = cv2.imread(job.path, cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise ValueError(f"cannot read page image {job.path}")
        return letterbox(gray, job.size), labels
    _, pages = decode(Path(job.path), working_copy=True)  # as intake decodes it
    return preprocess(pages[0].image, job.size, job.steps), labels


def _targets(job: _Job) -> np.ndarray:
    record = _record(job)
    return missing() if record is None else record_targets(record)


def _jobs(source: Source, size: tuple[int, int], steps: tuple[str, ...]) -> list[_Job]:
    if source.kind == "synthetic":
        if not source.n:
            raise ValueError("a synthetic source needs n")
        prevalence = tuple(sorted(source.prevalence.items())) if source.prevalence else None
        return [_Job("synthetic", i, size, steps, source.seed, source.artifacts, source.family, source.dpi,
                     prevalence=prevalence, normal_fraction=source.normal_fraction) for i in range(source.n)]
    if source.path is None:
        raise ValueError(f"a {source.kind} source needs path")
    if source.kind == "ptbxl":
        from model_training.ptbxl import load_database

        database = load_database(source.path)
        if source.folds:
            database = database[database["strat_fold"].isin(source.folds)]
        database = database.iloc[: source.n] if source.n else database
        column = "filename_hr" if "filename_hr" in database.columns else "filename_lr"
        return [_Job("ptbxl", int(ecg_id), size, steps, source.seed, source.artifacts, source.family, source.dpi,
                     path=str(source.path / row[column]), labels=tuple(int(row[label]) for label in LABELS))
                for ecg_id, row in database.iterrows()]
    with open(source.path / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    missing = [label for label in LABELS if rows and label not in rows[0]]
    if missing:
        raise ValueError(f"{source.path}/labels.csv lacks label columns {missing}")
    return [_Job("folder", i, size, steps, path=str(source.path / row["file"]), preprocessed=source.preprocessed,
                 labels=tuple(int(row[label]) for label in LABELS)) for i, row in enumerate(rows)]


def _key(source: Source, size: tuple[int, int], steps: Sequence[str]) -> str:
    identity: dict[str, Any] = {"source": source.model_dump(mode="json"), "size": list(size), "steps": list(steps),
                                "preprocess_version": PREPROCESS_VERSION}
    if source.kind == "synthetic":
        identity["synth_version"] = SYNTH_VERSION
    if source.kind == "folder" and source.path is not None:  # a folder's contents may change under the same name
        identity["labels_mtime"] = (source.path / "labels.csv").stat().st_mtime_ns
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def load_pages(source: Source, size: tuple[int, int], steps: Sequence[str], cache: Path,
               workers: int | None = None, progress: Any = None) -> PageSet:
    """The source's pages, built in parallel on first use and read from the cache afterwards."""
    cache.mkdir(parents=True, exist_ok=True)
    key = _key(source, size, steps)
    images_path, labels_path = cache / f"{key}-images.npy", cache / f"{key}-labels.npy"
    if images_path.exists() and labels_path.exists():
        return PageSet(np.load(images_path, mmap_mode="r"), np.load(labels_path), source.describe())
    jobs = _jobs(source, tuple(size), tuple(steps))
    partial = cache / f"{key}-images.partial.npy"
    images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(jobs), *size))
    labels = np.zeros((len(jobs), len(LABELS)), np.float32)
    for index, (image, label) in enumerate(parallel_map(_make, jobs, workers or os.cpu_count() or 1)):
        images[index], labels[index] = image, label
        if progress:
            progress(1)
    images.flush()
    del images
    np.save(labels_path, labels)
    os.replace(partial, images_path)  # only a complete set is ever found under its key
    return PageSet(np.load(images_path, mmap_mode="r"), labels, source.describe())


def load_targets(source: Source, cache: Path, workers: int | None = None) -> np.ndarray:
    """Each page's signal targets (`signal_targets`), in page order, cached like the pages.

    They depend on the records only, not on the drawing or the input size, so one file serves every
    size and family of the same records.
    """
    cache.mkdir(parents=True, exist_ok=True)
    records = source.model_dump(mode="json", exclude={"artifacts", "family", "dpi", "preprocessed"})
    identity = {"records": records, "synth_version": SYNTH_VERSION, "targets": WIDTH}
    if source.kind == "folder" and source.path is not None:
        identity["labels_mtime"] = (source.path / "labels.csv").stat().st_mtime_ns
    path = cache / f"{hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]}-targets.npy"
    if path.exists():
        return np.load(path)
    jobs = _jobs(source, (0, 0), ())
    targets = np.stack(list(parallel_map(_targets, jobs, workers or os.cpu_count() or 1)))
    partial = path.with_suffix(".partial.npy")
    np.save(partial, targets)
    os.replace(partial, path)
    return targets


def concatenate(sets: list[PageSet]) -> PageSet:
    if len(sets) == 1:
        return sets[0]
    return PageSet(np.concatenate([np.asarray(s.images) for s in sets]), np.concatenate([s.labels for s in sets]),
                   " + ".join(s.description for s in sets))
