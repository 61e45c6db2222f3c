"""One page image to 12 leads: cleaned as intake cleans it, its layout found, its leads read.

The reading is taken from the cleaning's last full-page stage (deskewed, flattened, grid suppressed, at the
working resolution of about 4 px/mm), before the crop to the trace area: the crop can cut into a row's
calibration pulse, and the pulses mark the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.preprocess import PX_PER_MM_RANGE, STEPS, clean
from model_training.digitise.classical import Digitised
from model_training.digitise.layout import Layout, digitise_sheet

SHEET_STAGES = ("grid", "creases", "deskew", "illumination", "page", "input")  # the first one present is read
A4_WIDTH_MM = 297.0


@dataclass(frozen=True)
class PageReading:
    """A page read back; `layout.name` is None when no standard layout fitted (then no lead was read). `sheet` is
    the cleaned full page the leads were read from: the layout's pixel boxes are in its coordinates."""

    sheet: np.ndarray
    layout: Layout
    digitised: Digitised
    px_per_mm: float
    scale_source: str


def digitise_image(image: np.ndarray) -> PageReading:
    """Clean `image` (any page intake takes: BGR or grayscale uint8) and read its leads."""
    cleaned = clean(image, (256, 352), STEPS, keep_stages=True)
    stages = dict(cleaned.stages)
    sheet = next(stages[name] for name in SHEET_STAGES if name in stages)
    px_per_mm, source = cleaned.px_per_mm, cleaned.scale_source
    if px_per_mm is None or not PX_PER_MM_RANGE[0] <= px_per_mm <= PX_PER_MM_RANGE[1]:
        px_per_mm, source = sheet.shape[1] / A4_WIDTH_MM, "page_width"  # a guess: the sheet as wide as A4
    layout, digitised = digitise_sheet(sheet, px_per_mm)
    return PageReading(sheet, layout, digitised, px_per_mm, source)
