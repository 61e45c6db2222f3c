"""Write a labelled synthetic set: one page per record in each requested file format, plus labels.csv.

`wfdb` adds the raw signals in PTB-XL's layout under `<out>/ptbxl/` (records500, records100,
ptbxl_database.csv, scp_statements.csv), readable by `model_training.ptbxl` like a real download.
`muse`, `philips` and `aecg` write the record's signals as GE MUSE, Philips SierraECG and HL7 aECG XML
exports (`synth.vendor_out`), `scp` as an SCP-ECG record (`synth.scp_out`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from model_training.parallel import parallel_map
from model_training.synth.dicom_out import write_encapsulated_pdf, write_secondary_capture, write_waveform
from model_training.synth.families import FAMILIES, render_family
from model_training.synth.scp_out import write_scp
from model_training.synth.signals import LABELS, Record, generate_record
from model_training.synth.vendor_out import write_aecg, write_muse, write_philips
from model_training.synth.wfdb_out import write_record, write_tables

IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg", "tiff": ".tiff", "pdf": ".pdf"}
DICOM_FORMATS = {"dicom-waveform": "-waveform.dcm", "dicom-sc": "-sc.dcm", "dicom-pdf": "-pdf.dcm"}
# Vendor XML exports and SCP-ECG records of the record's signals (`synth.vendor_out`, `synth.scp_out`), written
# from the same record as dicom-waveform.
VENDOR_FORMATS = {"muse": "-muse.xml", "philips": "-philips.xml", "aecg": "-aecg.xml", "scp": "-scp.scp"}
VENDOR_WRITERS = {"muse": write_muse, "philips": write_philips, "aecg": write_aecg, "scp": write_scp}
FORMATS = {**IMAGE_FORMATS, **DICOM_FORMATS, **VENDOR_FORMATS}
SEED_STRIDE = 10_000_000  # set seed S owns item seeds S*stride .. S*stride+stride-1: sets never overlap


@dataclass(frozen=True)
class Job:
    index: int
    seed: int
    out: str
    formats: tuple[str, ...]
    artifacts: str
    dpi: int | None
    prevalence: tuple[tuple[str, float], ...] | None = None
    normal_fraction: float | None = None
    family: str = "ours"


def item_seed(set_seed: int, index: int) -> int:
    return set_seed * SEED_STRIDE + index


def _write(record: Record, image: np.ndarray, path: Path, fmt: str, dpi: int) -> None:
    if fmt == "dicom-waveform":
        write_waveform(record, path)
    elif fmt in VENDOR_WRITERS:
        path.write_bytes(VENDOR_WRITERS[fmt](record.signals, record.fs, patient_id=f"SYN{record.seed}"))
    elif fmt == "dicom-sc":
        write_secondary_capture(record, image, path)
    elif fmt == "dicom-pdf":
        write_encapsulated_pdf(record, image, dpi, path)
    elif fmt == "pdf":
        Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).save(path, resolution=float(dpi))
    elif fmt == "jpg":
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    elif fmt == "png":
        cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        cv2.imwrite(str(path), image)


def make_item(job: Job) -> tuple[list[dict[str, object]], dict[str, object] | None]:
    """Generate, render and write one record; returns its labels.csv rows and its PTB-XL database row.

    A set of signals only (`wfdb`) still gets one labels.csv row per record, naming its WFDB record.
    """
    record = generate_record(job.seed, prevalence=dict(job.prevalence) if job.prevalence else None,
                             normal_fraction=job.normal_fraction)
    ptbxl_row = write_record(record, Path(job.out) / "ptbxl", job.index + 1) if "wfdb" in job.formats else None
    labels = {label: record.labels[label] for label in LABELS}
    pictures = [f for f in job.formats if f != "wfdb"]
    if not pictures:
        return [{"file": f"ptbxl/{ptbxl_row['filename_hr']}", **labels, "subtypes": ";".join(record.subtypes),
                 "seed": job.seed, "format": "wfdb", "family": "", "layout": "", "grid": "", "dpi": "",
                 "artifacts": ""}], ptbxl_row
    image, page = render_family(record, job.seed, job.family, job.artifacts, job.dpi)
    rows = []
    for fmt in pictures:
        name = f"{job.index:06d}{FORMATS[fmt]}"
        _write(record, image, Path(job.out) / name, fmt, page.dpi)
        rows.append({"file": name, **labels, "subtypes": ";".join(record.subtypes), "seed": job.seed, "format": fmt,
                     "family": job.family, "layout": page.layout, "grid": page.grid, "dpi": page.dpi,
                     "artifacts": ";".join(page.artifacts)})
    return rows, ptbxl_row


def write_dataset(out: Path, n: int, formats: tuple[str, ...] = ("png",), artifacts: str = "heavy", seed: int = 0,
                  dpi: int | None = None, workers: int | None = None,
                  progress: Callable[[int], None] | None = None, prevalence: dict[str, float] | None = None,
                  normal_fraction: float | None = None, family: str = "ours") -> Path:
    """Write `n` records into `out` and `out/labels.csv`; deterministic for a given `seed` and `family`."""
    unknown = set(formats) - set(FORMATS) - {"wfdb"}
    if unknown:
        raise ValueError(f"unsupported formats {sorted(unknown)}; available: {sorted(FORMATS)} and wfdb")
    out.mkdir(parents=True, exist_ok=True)
    frozen = tuple(sorted(prevalence.items())) if prevalence else None
    if family not in FAMILIES:
        raise ValueError(f"unknown drawing family {family!r}; available: {', '.join(FAMILIES)}")
    jobs = [Job(i, item_seed(seed, i), str(out), tuple(formats), artifacts, dpi, frozen, normal_fraction, family)
            for i in range(n)]
    labels_path = out / "labels.csv"
    ptbxl_rows = []
    with open(labels_path, "w", newline="") as handle:
        writer = None
        for rows, ptbxl_row in parallel_map(make_item, jobs, workers or os.cpu_count() or 1):
            if ptbxl_row is not None:
                ptbxl_rows.append(ptbxl_row)
            for row in rows:
                if writer is None:
                    writer = csv.DictWriter(handle, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
            if progress:
                progress(1)
    if ptbxl_rows:
        write_tables(out / "ptbxl", ptbxl_rows)
    return labels_path
