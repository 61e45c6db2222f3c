"""A page read back, drawn for a person to judge: the cleaned sheet in grey, and on it every lead as it was read,
at the place it was read from. Where the drawn-back line leaves the ink, the reading is wrong."""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np

from model_training.digitise.classical import TIMES
from model_training.digitise.page import PageReading
from model_training.digitise.quality import PARTIAL, READ, UNREAD, lead_quality

COLOURS = {READ: (40, 160, 0), PARTIAL: (0, 150, 240), UNREAD: (40, 40, 220)}  # BGR: green, orange, red
SHEET_FADE = 0.45  # the sheet is lightened towards white so the coloured lines stand out


def draw_trace(reading: PageReading) -> np.ndarray:
    """The sheet (BGR) with each lead's signal drawn back in its box, coloured by its quality and named; a lead
    not read has its box crossed out in red, and a page with no layout found says so across its top."""
    gray = reading.sheet if reading.sheet.ndim == 2 else cv2.cvtColor(reading.sheet, cv2.COLOR_BGR2GRAY)
    faded = (255 - SHEET_FADE * (255 - gray.astype(np.float32))).astype(np.uint8)
    image = cv2.cvtColor(faded, cv2.COLOR_GRAY2BGR)
    digitised = reading.digitised
    thickness = max(1, round(reading.px_per_mm / 4))
    for box in reading.layout.boxes:
        if box.lead not in digitised.leads:
            continue
        quality = lead_quality(digitised.read.get(box.lead, 0.0))
        colour = COLOURS[quality]
        signal = digitised.signals[digitised.leads.index(box.lead)]
        inside = (box.start_s <= TIMES) & (box.stop_s >= TIMES) & np.isfinite(signal)
        xs = box.x0 + (TIMES[inside] - box.start_s) * box.px_per_s
        ys = box.baseline - signal[inside] * box.px_per_mv
        for run in _runs(np.flatnonzero(inside)):
            points = np.stack([xs[run], ys[run]], axis=1).round().astype(np.int32)
            cv2.polylines(image, [points], False, colour, thickness, cv2.LINE_AA)
        if quality == UNREAD:
            right = round(box.x0 + (box.stop_s - box.start_s) * box.px_per_s)
            cv2.line(image, (round(box.x0), box.top), (right, box.bottom), colour, thickness)
            cv2.line(image, (round(box.x0), box.bottom), (right, box.top), colour, thickness)
        cv2.putText(image, box.lead, (round(box.x0) + 2, box.top + round(4 * reading.px_per_mm)),
                    cv2.FONT_HERSHEY_SIMPLEX, reading.px_per_mm / 8, colour, thickness, cv2.LINE_AA)
    if not reading.layout.boxes:
        cv2.putText(image, "no standard layout found: no lead read", (round(4 * reading.px_per_mm),
                    round(10 * reading.px_per_mm)), cv2.FONT_HERSHEY_SIMPLEX, reading.px_per_mm / 6,
                    COLOURS[UNREAD], thickness + 1, cv2.LINE_AA)
    return image


def _runs(indices: np.ndarray) -> list[slice]:
    """Positions (into `indices`) of its runs of consecutive values: a gap in a read lead stays a gap."""
    if not indices.size:
        return []
    breaks = np.flatnonzero(np.diff(indices) > 1) + 1
    edges = [0, *breaks.tolist(), indices.size]
    return [slice(a, b) for a, b in pairwise(edges) if b - a > 1]
