"""The classical digitiser, the baseline a learned one is measured against: ink is what is darker than the grid,
and in each pixel column of a lead's box the lead's value is the centre of the run of ink that continues the
trace (threshold plus column centroid).

It reads a page whose geometry is known: where each lead's segment starts, its row's baseline and the page's
pixels per millimetre (`ingest.render.PageGeometry`, exact for pages we draw). Where rows overlap, or a label or
a separator tick shares a column with the trace, the run nearest the trace's previous point wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ingest.preprocess import brightest_channel
from ingest.render import PAGE_SECONDS, STANDARD_LEADS, PageGeometry

FS = 500  # what every digitised signal is sampled at
TIMES = np.arange(round(PAGE_SECONDS * FS)) / FS  # the sample times of every digitised signal
INK_LEVEL = 0.45  # from the darkest ink (0) to the paper (1): darker than this in every channel is ink
BRIGHT_LEVEL = 0.8


@dataclass(frozen=True)
class Digitised:
    """A page read back: `signals` (leads x samples, mV, `FS` Hz, `PAGE_SECONDS` long) is NaN where the page did
    not show the lead; `read` is, per lead, the share of the time it was drawn that could be read."""

    signals: np.ndarray
    leads: tuple[str, ...]
    read: dict[str, float]
    fs: int = FS


def ink_mask(image: np.ndarray) -> np.ndarray:
    """True where the pen drew. A pixel counts when its darkest channel is darker than `INK_LEVEL` of the way
    from the ink to the paper (a thin, anti-aliased blue or red trace is dark there) and its brightest channel
    too, by a looser margin (a red, green or blue grid line is nearly paper-white there)."""
    darkest = image.min(axis=2) if image.ndim == 3 else image
    brightest = brightest_channel(image)
    ink, paper = np.percentile(darkest, (0.5, 95))
    return (darkest < ink + INK_LEVEL * (paper - ink)) & (brightest < ink + BRIGHT_LEVEL * (paper - ink))


def _column_runs(mask: np.ndarray, x_from: int, x_to: int, top: int, bottom: int, start_y: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per column from `x_from` to `x_to` (inclusive), the first and last row of the ink run nearest the previous
    run's centre (NaN where the column has no ink)."""
    firsts_out = np.full(x_to - x_from + 1, np.nan)
    lasts_out = np.full(x_to - x_from + 1, np.nan)
    previous = start_y
    band = mask[top:bottom]
    for offset, x in enumerate(range(x_from, x_to + 1)):
        rows = np.flatnonzero(band[:, x])
        if rows.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(rows) > 1)
        firsts = np.r_[rows[0], rows[breaks + 1]] + top
        lasts = np.r_[rows[breaks], rows[-1]] + top
        distance = np.maximum(0, np.maximum(firsts - previous, previous - lasts))
        nearest = int(np.argmin(distance))
        firsts_out[offset], lasts_out[offset] = firsts[nearest], lasts[nearest]
        previous = (firsts[nearest] + lasts[nearest]) / 2
    return firsts_out, lasts_out


def _column_values(firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """The trace's row in each column. A column the pen crosses on its way up or down holds the trace's middle;
    a column at a peak or a trough (both neighbours' runs on one side) holds the extreme, a pen's half-width
    inside the run's outer edge: a column's centre there would cut every sharp wave short."""
    centres = (firsts + lasts) / 2
    lengths = lasts - firsts + 1
    half_pen = np.nanmedian(lengths) / 2 if np.isfinite(lengths).any() else 0.0
    before, after = np.roll(centres, 1), np.roll(centres, -1)
    before[0], after[-1] = np.nan, np.nan
    peak = (before > centres) & (after > centres) & (lengths > 2 * half_pen + 1)
    trough = (before < centres) & (after < centres) & (lengths > 2 * half_pen + 1)
    values = centres.copy()
    values[peak] = firsts[peak] + half_pen - 0.5
    values[trough] = lasts[trough] - half_pen + 0.5
    return values


@dataclass(frozen=True)
class PixelBox:
    """One lead segment in an image's pixels: seconds `start_s` to `stop_s` of the recording drawn from column
    `x0` at `px_per_s`, about row `baseline` at `px_per_mv`, between rows `top` and `bottom`."""

    lead: str
    start_s: float
    stop_s: float
    x0: float
    px_per_s: float
    baseline: float
    px_per_mv: float
    top: int
    bottom: int


def pixel_boxes(geometry: PageGeometry, px_per_mm: float, fs: float) -> list[PixelBox]:
    """The boxes of a page drawn by `ingest.render` at `px_per_mm`."""
    return [PixelBox(box.lead, box.start / fs, (box.stop - 1) / fs, box.x0_mm * px_per_mm,
                     geometry.speed_mm_s * px_per_mm, box.baseline_mm * px_per_mm, geometry.gain_mm_mv * px_per_mm,
                     round((box.baseline_mm - box.row_height_mm / 2) * px_per_mm),
                     round((box.baseline_mm + box.row_height_mm / 2) * px_per_mm))
            for box in geometry.boxes]


def read_box(mask: np.ndarray, box: PixelBox, times: np.ndarray) -> np.ndarray:
    """The lead of `box` in mV at `times` (seconds); NaN outside the box's time window and where no ink was."""
    height, width = mask.shape
    x_from = max(0, math.ceil(box.x0))
    x_to = min(width - 1, math.floor(box.x0 + (box.stop_s - box.start_s) * box.px_per_s))
    top, bottom = max(0, box.top), min(height, box.bottom)
    values = np.full(times.size, np.nan)
    if x_to <= x_from or bottom <= top:
        return values
    centres = _column_values(*_column_runs(mask, x_from, x_to, top, bottom, box.baseline))
    column_times = box.start_s + (np.arange(x_from, x_to + 1) - box.x0) / box.px_per_s
    seen = np.isfinite(centres)
    if seen.sum() < 2:
        return values
    inside = (times >= box.start_s) & (times <= box.stop_s)
    values[inside] = np.interp(times[inside], column_times[seen], centres[seen])
    # a time whose nearest read column is more than two columns away was not seen
    nearest = np.abs(times[inside, None] - column_times[seen][None, :]).min(axis=1)
    values[np.flatnonzero(inside)[nearest > 2 / box.px_per_s]] = np.nan
    return (box.baseline - values) / box.px_per_mv


def read_boxes(mask: np.ndarray, boxes: Sequence[PixelBox], leads: Sequence[str] = STANDARD_LEADS) -> Digitised:
    """Every lead of `boxes` read from the ink `mask`; a lead drawn twice (a segment and a rhythm strip) is the
    mean of its readings where both saw it."""
    readings: dict[str, list[np.ndarray]] = {lead: [] for lead in leads}
    drawn = {lead: np.zeros(TIMES.size, bool) for lead in leads}
    for box in boxes:
        if box.lead not in readings:
            continue
        readings[box.lead].append(read_box(mask, box, TIMES))
        drawn[box.lead] |= (box.start_s <= TIMES) & (box.stop_s >= TIMES)
    signals = np.full((len(leads), TIMES.size), np.nan)
    read = {}
    for index, lead in enumerate(leads):
        if readings[lead]:
            stack = np.vstack(readings[lead])
            seen = np.isfinite(stack)
            signals[index] = np.where(seen.any(axis=0), np.nansum(stack, axis=0) / np.maximum(seen.sum(axis=0), 1),
                                      np.nan)
        read[lead] = float(np.isfinite(signals[index][drawn[lead]]).mean()) if drawn[lead].any() else 0.0
    return Digitised(signals, tuple(leads), read)


def digitise_known(image: np.ndarray, geometry: PageGeometry, px_per_mm: float, fs: float,
                   leads: Sequence[str] = STANDARD_LEADS) -> Digitised:
    """Every lead of a page drawn by `ingest.render` whose geometry is known."""
    return read_boxes(ink_mask(image), pixel_boxes(geometry, px_per_mm, fs), leads)
