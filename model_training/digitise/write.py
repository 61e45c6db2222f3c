"""A digitised page on disk: CSV for a spreadsheet, WFDB for the PhysioNet tools. A sample the page did not show
is empty in the CSV and WFDB's invalid-sample value in the record, never a zero that would read as a flat line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import wfdb

from model_training.digitise.classical import Digitised

WFDB_GAIN = 1000.0  # adc units per mV: 1 uV steps


def write_csv(path: Path, digitised: Digitised) -> Path:
    """One row per sample: the time in seconds, then each lead in mV."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time_s", *digitised.leads])
        for index, column in enumerate(digitised.signals.T):
            writer.writerow([f"{index / digitised.fs:.4f}", *("" if np.isnan(v) else f"{v:.4f}" for v in column)])
    return path


def write_wfdb(folder: Path, name: str, digitised: Digitised, comments: list[str] | None = None) -> Path:
    """`name.hea` and `name.dat` (format 16, mV) in `folder`; returns the header's path."""
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=digitised.fs, units=["mV"] * len(digitised.leads), sig_name=list(digitised.leads),
                p_signal=np.ascontiguousarray(digitised.signals.T, dtype=np.float64), fmt=["16"] * len(digitised.leads),
                adc_gain=[WFDB_GAIN] * len(digitised.leads), baseline=[0] * len(digitised.leads),
                comments=comments or [], write_dir=str(folder))
    return folder / f"{name}.hea"
