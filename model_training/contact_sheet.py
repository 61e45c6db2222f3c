"""Labelled images tiled on one white sheet, for a person to compare at a glance.

The synthetic gallery and `ecg-intake preprocess --sheet` both draw one, so both look alike; the worker
may import this module (it is not under `synth`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

LABEL_BAND = 30  # px of white above each tile, so the label never hides the image
BORDER = 4


def contact_sheet(tiles: Sequence[tuple[str, np.ndarray]], columns: int, width: int,
                  aspect: float | None = None) -> np.ndarray:
    """`(label, image)` pairs, each resized to `width` (height `width * aspect`, or its own aspect when None),
    in rows of `columns`; a short row is filled with white. All images gray, or all colour."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one image")
    framed = []
    for label, image in tiles:
        height = round(width * aspect) if aspect else round(image.shape[0] * width / image.shape[1])
        tile = cv2.copyMakeBorder(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
                                  LABEL_BAND, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        cv2.putText(tile, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
        framed.append(tile)
    tallest = max(tile.shape[0] for tile in framed)
    framed = [cv2.copyMakeBorder(tile, 0, tallest - tile.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
              for tile in framed]
    blank = np.full_like(framed[0], 255)
    framed += [blank] * (-len(framed) % columns)
    return np.vstack([np.hstack(framed[start : start + columns]) for start in range(0, len(framed), columns)])
