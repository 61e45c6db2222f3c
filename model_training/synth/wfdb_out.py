"""Export synthetic records in PTB-XL's layout: WFDB records at 500 and 100 Hz plus its two CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import wfdb
from scipy.signal import resample_poly

from model_training.synth.signals import Record

# The SCP statements our subtypes correspond to, with PTB-XL's own classes for them.
SUBTYPE_CODES = {
    "MI:anterior_old": "AMI", "MI:anterior_acute": "AMI", "MI:inferior_old": "IMI", "MI:inferior_acute": "IMI",
    "MI:lateral_old": "LMI", "MI:lateral_acute": "LMI",
    "STTC:st_depression": "NST_", "STTC:t_inversion": "ISC_", "STTC:t_flattening": "NDT", "STTC:long_qt": "LNGQT",
    "CD:lbbb": "CLBBB", "CD:rbbb": "CRBBB", "CD:avb1": "1AVB", "CD:lafb": "LAFB", "CD:lpfb": "LPFB", "CD:wpw": "WPW",
    "HYP:lvh": "LVH", "HYP:lvh_strain": "LVH", "HYP:rvh": "RVH", "HYP:lae": "LAO/LAE", "HYP:rae": "RAO/RAE",
    "AF:fibrillation": "AFIB", "AF:flutter": "AFLT",
}
STATEMENTS = [  # code, description, diagnostic, rhythm, diagnostic_class, diagnostic_subclass (as in PTB-XL)
    ("NORM", "normal ECG", 1, None, "NORM", "NORM"),
    ("AMI", "anterior myocardial infarction", 1, None, "MI", "AMI"),
    ("IMI", "inferior myocardial infarction", 1, None, "MI", "IMI"),
    ("LMI", "lateral myocardial infarction", 1, None, "MI", "LMI"),
    ("NST_", "non-specific ST changes", 1, None, "STTC", "NST_"),
    ("ISC_", "non-specific ischemic", 1, None, "STTC", "ISC_"),
    ("NDT", "non-diagnostic T abnormalities", 1, None, "STTC", "STTC"),
    ("LNGQT", "long QT-interval", 1, None, "STTC", "STTC"),
    ("CLBBB", "complete left bundle branch block", 1, None, "CD", "CLBBB"),
    ("CRBBB", "complete right bundle branch block", 1, None, "CD", "CRBBB"),
    ("1AVB", "first degree AV block", 1, None, "CD", "_AVB"),
    ("LAFB", "left anterior fascicular block", 1, None, "CD", "LAFB/LPFB"),
    ("LPFB", "left posterior fascicular block", 1, None, "CD", "LAFB/LPFB"),
    ("WPW", "Wolf-Parkinson-White syndrome", 1, None, "CD", "WPW"),
    ("LVH", "left ventricular hypertrophy", 1, None, "HYP", "LVH"),
    ("RVH", "right ventricular hypertrophy", 1, None, "HYP", "RVH"),
    ("LAO/LAE", "left atrial overload/enlargement", 1, None, "HYP", "LAO/LAE"),
    ("RAO/RAE", "right atrial overload/enlargement", 1, None, "HYP", "RAO/RAE"),
    ("SR", "sinus rhythm", None, 1, None, None),
    ("AFIB", "atrial fibrillation", None, 1, None, None),
    ("AFLT", "atrial flutter", None, 1, None, None),
]
WFDB_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def scp_codes(record: Record) -> dict[str, float]:
    codes = {SUBTYPE_CODES[s]: 100.0 for s in record.subtypes if s in SUBTYPE_CODES}
    if not record.labels["AF"]:
        codes["SR"] = 0.0
    if not any(record.labels.values()):
        codes = {"NORM": 100.0, "SR": 0.0}
    return codes


def write_record(record: Record, root: Path, ecg_id: int) -> dict[str, object]:
    """Write one record at 500 Hz and 100 Hz; returns its ptbxl_database.csv row."""
    block = f"{(ecg_id // 1000) * 1000:05d}"
    names = {}
    for rate, folder, suffix in ((500, "records500", "hr"), (100, "records100", "lr")):
        signal = record.signals if rate == record.fs else resample_poly(record.signals, rate, record.fs, axis=1)
        directory = root / folder / block
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{ecg_id:05d}_{suffix}"
        wfdb.wrsamp(name, fs=rate, units=["mV"] * 12, sig_name=WFDB_LEADS,
                    p_signal=np.ascontiguousarray(signal.T, dtype=np.float64), fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(directory))
        names[suffix] = f"{folder}/{block}/{name}"
    return {"ecg_id": ecg_id, "patient_id": record.seed, "age": record.params.get("age"),
            "sex": 0 if record.params.get("sex") == "M" else 1, "recording_date": "2024-01-01 12:00:00",
            "report": ";".join(record.subtypes), "scp_codes": str(scp_codes(record)),
            "strat_fold": ecg_id % 10 + 1, "filename_lr": names["lr"], "filename_hr": names["hr"],
            "seed": record.seed}


def write_tables(root: Path, rows: list[dict[str, object]]) -> None:
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    statements = pd.DataFrame(STATEMENTS, columns=["scp_code", "description", "diagnostic", "rhythm",
                                                   "diagnostic_class", "diagnostic_subclass"])
    statements.to_csv(root / "scp_statements.csv", index=False)
