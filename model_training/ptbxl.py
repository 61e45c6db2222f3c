"""PTB-XL's on-disk format: read a real download or our synthetic export through the same code.

Labels follow the task's mapping: MI, STTC, CD and HYP from the `diagnostic_class` of every diagnostic
SCP code in `scp_statements.csv`; AF from the rhythm codes AFIB and AFLT; a record with none is normal.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

from model_training.manifest import LABELS

AF_CODES = ("AFIB", "AFLT")
LEAD_NAMES = {"I": "I", "II": "II", "III": "III", "AVR": "aVR", "AVL": "aVL", "AVF": "aVF",
              "V1": "V1", "V2": "V2", "V3": "V3", "V4": "V4", "V5": "V5", "V6": "V6"}


def load_database(folder: Path) -> pd.DataFrame:
    """`ptbxl_database.csv` with one multi-hot column per label added."""
    folder = Path(folder)
    database = pd.read_csv(folder / "ptbxl_database.csv", index_col="ecg_id")
    statements = pd.read_csv(folder / "scp_statements.csv", index_col=0)
    diagnostic = statements[statements["diagnostic"] == 1]["diagnostic_class"].to_dict()
    codes = database["scp_codes"].apply(ast.literal_eval)
    for label in LABELS:
        if label == "AF":
            database[label] = codes.apply(lambda c: int(any(code in c for code in AF_CODES)))
        else:
            database[label] = codes.apply(lambda c, lb=label: int(any(diagnostic.get(code) == lb for code in c)))
    return database


def read_signals(folder: Path, filename: str) -> tuple[np.ndarray, int, list[str]]:
    """(12 x samples) millivolts, sampling rate, lead names in our spelling."""
    signals, fields = wfdb.rdsamp(str(Path(folder) / filename))
    names = [LEAD_NAMES.get(name.upper(), name) for name in fields["sig_name"]]
    return signals.T.astype(np.float32), int(fields["fs"]), names
