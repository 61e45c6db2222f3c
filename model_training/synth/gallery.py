"""A contact sheet of synthetic pages: one row per class, one column per artifact level."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from model_training.synth.paper import ARTIFACT_LEVELS, render_page
from model_training.synth.signals import generate_record

ROWS = (("normal", {}), ("MI", {"MI": "anterior_acute"}), ("AF", {"AF": "fibrillation"}),
        ("STTC", {"STTC": "st_depression"}), ("CD", {"CD": "lbbb"}), ("HYP", {"HYP": "lvh_strain"}))


def write_gallery(path: Path, width: int = 400, seed: int = 2024) -> Path:
    tiles = []
    for row_index, (name, findings) in enumerate(ROWS):
        record = generate_record(seed + row_index, findings=findings, noise=0.6)
        row = []
        for column, level in enumerate(ARTIFACT_LEVELS):
            image, _ = render_page(record, seed * 10 + row_index * 3 + column, level, dpi=150)
            tile = cv2.resize(image, (width, round(width * 0.72)), interpolation=cv2.INTER_AREA)
            cv2.putText(tile, f"{name} / {level}", (8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 200), 2, cv2.LINE_AA)
            row.append(cv2.copyMakeBorder(tile, 4, 4, 4, 4, cv2.BORDER_CONSTANT, value=(255, 255, 255)))
        tiles.append(np.hstack(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(tiles), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
