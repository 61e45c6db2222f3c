"""One page image to 12 leads: cleaned as intake cleans it, its trace told from the rest, its layout found, its
leads read.

The reading is taken from the cleaning's last full-page stage (deskewed, flattened, grid suppressed, at the
working resolution of about 4 px/mm), before the crop to the trace area: the crop can cut into a row's
calibration pulse, and the pulses mark the rows. The trace is the shipped segmenter's (`segment`) where the
models folder has one, else the classical threshold (`layout.ink`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ingest.preprocess import PX_PER_MM_RANGE, STEPS, clean, rotate
from model_training.digitise.classical import Digitised
from model_training.digitise.layout import Layout, digitise_mask, ink, trace_tilt
from model_training.digitise.segment import TRACE_LEVEL, Segmenter, sheet_input, sheet_of, shipped_segmenter

A4_WIDTH_MM = 297.0
MIN_TILT_DEG = 0.2


@dataclass(frozen=True)
class PageReading:
    """A page read back; `layout.name` is None when no standard layout fitted (then no lead was read). `sheet` is
    the cleaned full page the leads were read from: the layout's pixel boxes are in its coordinates. `method`
    says how the trace was told from the rest: "learned" (the segmenter) or "classical" (a threshold)."""

    sheet: np.ndarray
    layout: Layout
    digitised: Digitised
    px_per_mm: float
    scale_source: str
    method: str


def digitise_image(image: np.ndarray, segmenter: Segmenter | Literal["shipped"] | None = "shipped") -> PageReading:
    """Clean `image` (any page intake takes: BGR or grayscale uint8) and read its leads; `segmenter` None reads
    with the classical threshold."""
    cleaned = clean(image, (256, 352), STEPS, keep_stages=True)
    sheet = sheet_of(cleaned)
    px_per_mm, source = cleaned.px_per_mm, cleaned.scale_source
    if px_per_mm is None or not PX_PER_MM_RANGE[0] <= px_per_mm <= PX_PER_MM_RANGE[1]:
        px_per_mm, source = sheet.shape[1] / A4_WIDTH_MM, "page_width"  # a guess: the sheet as wide as A4
    if segmenter == "shipped":
        segmenter = shipped_segmenter()
    if segmenter is None:
        mask, method = ink(sheet), "classical"
    else:
        mask, method = segmenter.probabilities(sheet_input(image, cleaned)) >= TRACE_LEVEL, "learned"
    tilt = trace_tilt(mask)
    if abs(tilt) >= MIN_TILT_DEG:  # rows cleaning left askew: level the sheet and its trace together
        sheet = rotate(sheet, tilt)
        mask = rotate(np.where(mask, 0, 255).astype(np.uint8), tilt) < 128
    layout, digitised = digitise_mask(mask, px_per_mm)
    return PageReading(sheet, layout, digitised, px_per_mm, source, method)
