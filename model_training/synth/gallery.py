"""A contact sheet of synthetic pages: one row per class, one column per artifact level."""

from __future__ import annotations

from pathlib import Path

import cv2

from model_training.contact_sheet import contact_sheet
from model_training.synth.paper import ARTIFACT_LEVELS, render_page
from model_training.synth.signals import generate_record

ROWS = (("normal", {}), ("MI", {"MI": "anterior_acute"}), ("AF", {"AF": "fibrillation"}),
        ("STTC", {"STTC": "st_depression"}), ("CD", {"CD": "lbbb"}), ("HYP", {"HYP": "lvh_strain"}))


def write_gallery(path: Path, width: int = 400, seed: int = 2024) -> Path:
    """Fixed seeds, so the README's sample sheet can be drawn again exactly."""
    tiles = []
    for row_index, (name, findings) in enumerate(ROWS):
        record = generate_record(seed + row_index, findings=findings, noise=0.6)
        for column, level in enumerate(ARTIFACT_LEVELS):
            image, _ = render_page(record, seed * 10 + row_index * 3 + column, level, dpi=150)
            tiles.append((f"{name} / {level}", image))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), contact_sheet(tiles, len(ARTIFACT_LEVELS), width, aspect=0.72),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
