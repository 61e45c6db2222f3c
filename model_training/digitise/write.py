"""A digitised page on disk: CSV for a spreadsheet, WFDB for the PhysioNet tools, DICOM 12-lead waveform for the
PACS. A sample the page did not show is empty in the CSV, WFDB's invalid-sample value and DICOM's waveform padding
value, never a zero that would read as a flat line."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import wfdb
from pydicom.sequence import Sequence

from ingest.decode.dicom import METADATA_TAGS
from model_training.dicom_waveform import ECG_12_LEAD, new_dataset, waveform_group
from model_training.digitise.classical import Digitised

WFDB_GAIN = 1000.0  # adc units per mV: 1 uV steps
# what a derived object keeps of its source: whose it is and which study it belongs to
IDENTITY_TAGS = {tag: key for tag, key in METADATA_TAGS.items()
                 if key in ("patient_id", "accession_number", "study_instance_uid")}


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


def write_dicom(path: Path, digitised: Digitised, identity: dict[str, str], description: str) -> Path:
    """A derived 12-Lead ECG Waveform object in the source's study (its patient ID, accession number and study UID
    where the source file had them), in a series of its own."""
    ds = new_dataset(ECG_12_LEAD, "ECG")
    for tag, key in IDENTITY_TAGS.items():
        if identity.get(key):
            setattr(ds, tag, identity[key])
    now = datetime.now(UTC)
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Manufacturer, ds.SeriesDescription = "ecg-intake", description[:64]
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.WaveformSequence = Sequence([waveform_group(digitised.signals, digitised.fs, digitised.leads, "DERIVED")])
    ds.save_as(path, enforce_file_format=True)
    return path
