"""Where the leads are on a cleaned page whose layout nobody stated: its rows, their calibration pulses, the
columns each row is cut into, and the name of every segment.

It reads the trace area `ingest.preprocess.clean` hands over (deskewed, grid suppressed, at a measured px/mm):
- rows: the calibration pulses that open them (a 5 mm x 10 mm step), else the bands the ink profile shows;
- gain: a pulse's height is 1 mV; without one, 10 mm/mV at the measured px/mm;
- time: every standard layout spans 10 s, so a row's trace, from its first ink after the pulse to its last,
  is taken as 10 s (a px/mm error does not stretch the signal);
- columns: a row cut into segments shows one lead per segment, so its beats look alike within a segment and
  unlike across a cut; quarters (3x4), sixths (2x6), halves (6x2) and no cut (12x1, rhythm strips) are tried
  (drawing cues such as separator ticks differ between printers and vanish at working resolution);
- names: the layout's standard order; a rhythm strip is named by the segment above it it matches best.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import cv2
import numpy as np
from scipy.signal import find_peaks

from ingest.render import LAYOUTS, PAGE_SECONDS
from model_training.digitise.classical import FS, TIMES, Digitised, PixelBox, read_box, read_boxes

GAIN_MM_MV = 10.0
SPLITS = {"3x4": 4, "6x2": 2, "12x1": 1, "2x6": 6}
RHYTHM_MATCH = 0.8  # correlation a rhythm strip needs with a named segment to take its name
RHYTHM_PRIOR = 0.1  # most printers put lead II under the layout
QRS_HALF_S = 0.06
SPEED_MM_S = 25.0
GAP_MM = 3.0  # a blank this wide across a row's band separates two panels (a QRS is never this flat and empty)
MIN_PANEL_MM = 15.0
PANEL_WEIGHT = 0.5
MIN_ROW_COVER = 0.4
PRIOR = {"3x4": 0.05, "6x2": 0.03, "12x1": 0.02, "2x6": 0.0}  # how common each is in clinics: breaks near-ties


@dataclass(frozen=True)
class Row:
    """One row of traces: its baseline (pixel row), the trace's first and last columns, pixels per mV."""

    baseline: float
    left: int
    right: int
    px_per_mv: float
    pulse: bool
    panels: tuple[tuple[int, int], ...] = ()  # (first, last) column of each span of trace between blank gaps


@dataclass(frozen=True)
class Layout:
    """What was found: the layout's name (None when no standard layout fits), the rows and the segments."""

    name: str | None
    rows: tuple[Row, ...]
    boxes: tuple[PixelBox, ...]
    unnamed_rows: int = 0


def ink(gray: np.ndarray) -> np.ndarray:
    """The classical trace mask of a cleaned sheet: whatever is darker than mid-grey."""
    return gray < 128


def _pulses(mask: np.ndarray, px_per_mm: float) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of calibration pulses: an open box about 5 mm wide and 10 mm tall in the page's left part,
    flat along its top (a tall, narrow QRS is not), standing in one column with the other pulses."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8, cv2.CV_32S)
    found = []
    edge = max(1, round(0.6 * px_per_mm))
    for x, y, w, h, area in stats[1:count]:
        if (6.5 * px_per_mm <= h <= 14 * px_per_mm and 2.5 * px_per_mm <= w <= 9 * px_per_mm
                and x < 0.25 * mask.shape[1] and area < 0.6 * w * h
                and mask[y: y + edge, x: x + w].any(axis=0).mean() >= 0.6):
            found.append((int(x), int(y), int(w), int(h)))
    if not found:
        return []
    column = np.median([x for x, *_ in found])
    return [pulse for pulse in found if abs(pulse[0] - column) <= 3 * px_per_mm]


def _rows_from_profile(mask: np.ndarray, px_per_mm: float) -> list[float]:
    """Baselines where no pulse marks the rows: peaks of the ink per pixel row, at least 8 mm apart."""
    profile = mask[:, mask.shape[1] // 10: mask.shape[1] * 9 // 10].sum(axis=1).astype(float)
    profile = np.convolve(profile, np.ones(max(1, round(px_per_mm))) / max(1, round(px_per_mm)), mode="same")
    peaks, _ = find_peaks(profile, distance=max(1, round(8 * px_per_mm)), height=0.25 * profile.max())
    return [float(p) for p in peaks]


def _profile_rows(mask: np.ndarray, px_per_mm: float, px_per_mv: float) -> list[Row]:
    """Rows from the ink profile; a band whose ink covers under `MIN_ROW_COVER` of the widest row's columns is a
    stain, a stamp or a note, not a trace."""
    found = []
    for baseline in _rows_from_profile(mask, px_per_mm):
        band = mask[max(0, round(baseline - 3 * px_per_mm)): round(baseline + 3 * px_per_mm)]
        columns = np.flatnonzero(band.any(axis=0))
        if columns.size:
            found.append((columns.size, Row(baseline, int(columns[0]), int(columns[-1]), px_per_mv, False)))
    widest = max((cover for cover, _ in found), default=0)
    return [row for cover, row in found if cover >= MIN_ROW_COVER * widest]


def find_rows(mask: np.ndarray, px_per_mm: float) -> list[Row]:
    """Every row of traces in the ink `mask`, top to bottom: a row per calibration pulse, and a row wherever the
    ink profile shows one far from every pulse's (a pulse cut off or faded, or a printer that draws none)."""
    pulses = sorted(_pulses(mask, px_per_mm), key=lambda p: p[1])
    if len(pulses) < 2:
        return _profile_rows(mask, px_per_mm, GAIN_MM_MV * px_per_mm)
    stroke = max(1, round(0.3 * px_per_mm))
    rows = []
    for x, y, w, h in pulses:
        baseline = y + h - stroke / 2
        # a printer may put the trace's level a few mm above the pulse's foot
        band = mask[max(0, round(baseline - 8 * px_per_mm)): round(baseline + 4 * px_per_mm)]
        # the trace starts after the blank that follows the pulse (its foot may stand apart from its box)
        inked = band[:, x + w:].any(axis=0)
        blank = np.flatnonzero(~inked[: round(3 * px_per_mm)])
        start = x + w + (int(blank[0]) if blank.size else max(1, round(0.5 * px_per_mm)))
        after = np.flatnonzero(band[:, start:].any(axis=0))
        if after.size == 0:
            continue
        left = start + int(after[0])
        right = int(np.flatnonzero(band.any(axis=0))[-1])
        rows.append(Row(baseline, left, right, float(h - stroke), True))
    if not rows:
        return rows
    gain = float(np.median([row.px_per_mv for row in rows]))
    width = float(np.median([row.right - row.left for row in rows]))
    left = round(np.median([row.left for row in rows]))
    profile = _profile_rows(mask, px_per_mm, gain)
    if len(profile) < 2:
        return rows
    spacing = float(np.median(np.diff([row.baseline for row in profile])))

    def on_the_grid(baseline: float) -> bool:  # rows are evenly spaced; a header's line falls between
        steps = (baseline - rows[0].baseline) / spacing
        return abs(steps - round(steps)) < 0.25

    # with its trace from where the pulses' rows start (a pulse too close to its neighbours is still ink)
    extra = [replace(row, left=max(row.left, left)) for row in profile
             if row.right - row.left > width / 2 and on_the_grid(row.baseline)
             and min(abs(row.baseline - r.baseline) for r in rows) > 8 * px_per_mm]
    return sorted(rows + extra, key=lambda row: row.baseline)


def _panels(mask: np.ndarray, row: Row, band: tuple[int, int], px_per_mm: float) -> tuple[tuple[int, int], ...]:
    """The spans of a row's trace between blank gaps of `GAP_MM` or more (a chart printed as separate panels);
    spans narrower than `MIN_PANEL_MM` are labels or stray marks, not a lead."""
    inked = mask[max(0, band[0]): band[1], row.left: row.right + 1].any(axis=0)
    columns = np.flatnonzero(inked)
    if columns.size == 0:
        return ()
    breaks = np.flatnonzero(np.diff(columns) > GAP_MM * px_per_mm)
    spans = zip(np.r_[columns[0], columns[breaks + 1]], np.r_[columns[breaks], columns[-1]], strict=True)
    return tuple((row.left + int(a), row.left + int(b)) for a, b in spans if b - a >= MIN_PANEL_MM * px_per_mm)


def _with_panels(row: Row, panels: tuple[tuple[int, int], ...]) -> Row:
    """The row cut to where its panels of trace end: a speck or a sheet's shadowed edge beyond the last one does
    not stretch the row's 10 s."""
    if not panels:
        return row
    return replace(row, panels=panels, right=panels[-1][1])


def _row_boxes(row: Row, columns: int, names: tuple[str, ...], top: int, bottom: int,
               px_per_mm: float | None = None) -> list[PixelBox]:
    """A row cut into `columns` segments. A row printed as that many separate panels is cut at its panels, each
    taken as 10 s (all starting at 0) where it is about 250 mm wide, else as its share of the 10 s in turn; an
    unbroken row is cut evenly."""
    step = PAGE_SECONDS / columns
    if columns > 1 and len(row.panels) == columns and px_per_mm:
        widths = [b - a for a, b in row.panels]
        full = min(widths) / (SPEED_MM_S * px_per_mm) > 0.75 * PAGE_SECONDS
        span = PAGE_SECONDS if full else step
        return [PixelBox(name, 0.0 if full else c * step, (0.0 if full else c * step) + span - 1 / FS, a,
                         (b - a) / span, row.baseline, row.px_per_mv, top, bottom)
                for c, (name, (a, b)) in enumerate(zip(names, row.panels, strict=True))]
    px_per_s = (row.right - row.left) / PAGE_SECONDS
    return [PixelBox(name, c * step, (c + 1) * step - 1 / FS, row.left + c * step * px_per_s, px_per_s,
                     row.baseline, row.px_per_mv, top, bottom) for c, name in enumerate(names)]


def _band(rows: list[Row], index: int) -> tuple[int, int]:
    """A row's band: halfway to its neighbours (a row's own height above the first and below the last)."""
    baselines = [row.baseline for row in rows]
    gap = np.median(np.diff(baselines)) if len(rows) > 1 else 40.0
    above = baselines[index - 1] if index > 0 else baselines[index] - gap
    below = baselines[index + 1] if index + 1 < len(rows) else baselines[index] + gap
    return round((above + baselines[index]) / 2), round((baselines[index] + below) / 2)


def _row_reading(mask: np.ndarray, row: Row, band: tuple[int, int]) -> np.ndarray:
    """A whole row read as one 10 s trace (mV, `FS`), whatever segments it holds."""
    return read_box(mask, _row_boxes(row, 1, ("row",), *band)[0], TIMES)


def _beats(reading: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(time, QRS window) of each beat a row shows: peaks of the trace's slope energy, 300 ms apart at least."""
    filled = np.where(np.isfinite(reading), reading, np.nanmedian(reading) if np.isfinite(reading).any() else 0.0)
    energy = np.convolve(np.abs(np.diff(filled, prepend=filled[0])), np.ones(20) / 20, mode="same")
    if energy.max() <= 0:
        return []
    peaks, _ = find_peaks(energy, distance=round(0.3 * FS), height=0.35 * energy.max())
    half = round(QRS_HALF_S * FS)
    return [(p / FS, filled[p - half: p + half] - np.median(filled[p - half: p + half]))
            for p in peaks if half <= p < filled.size - half]


def _alike(a: np.ndarray, b: np.ndarray) -> float:
    """Two QRS windows' likeness: their correlation, scaled down by how much their sizes differ."""
    size_a, size_b = np.ptp(a), np.ptp(b)
    if size_a == 0 or size_b == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1]) * min(size_a, size_b) / max(size_a, size_b)


def _split_score(beats: list[tuple[float, np.ndarray]], columns: int) -> float:
    """How well cutting a row into `columns` equal segments explains its beats: of two beats in a row, those
    in one segment (one lead) look alike, those either side of a cut (two leads) do not. 0 when no pair tells."""
    if columns == 1:
        return 0.0
    step = PAGE_SECONDS / columns
    inside = [(int(t // step), qrs) for t, qrs in beats
              if QRS_HALF_S < t - (t // step) * step < step - QRS_HALF_S]  # a beat on a cut shows two leads
    pairs = list(pairwise(inside))
    within = [_alike(a, b) for (sa, a), (sb, b) in pairs if sa == sb]
    across = [_alike(a, b) for (sa, a), (sb, b) in pairs if sa != sb]
    if not within or not across:
        return 0.0
    return float(np.mean(within) - np.mean(across))


def find_layout(mask: np.ndarray, px_per_mm: float) -> Layout:
    """The layout whose rows and cuts fit the ink `mask` best; `name` None when no row count fits a standard one."""
    rows = find_rows(mask, px_per_mm)
    bands = [_band(rows, i) for i in range(len(rows))]
    rows = [_with_panels(row, _panels(mask, row, band, px_per_mm)) for row, band in zip(rows, bands, strict=True)]
    readings = [_row_reading(mask, row, band) for row, band in zip(rows, bands, strict=True)]
    beats = [_beats(reading) for reading in readings]
    scores = [{columns: _split_score(row_beats, columns) for columns in set(SPLITS.values())} for row_beats in beats]
    best: tuple[float, str] | None = None
    for name, layout_rows in LAYOUTS.items():
        n = len(layout_rows)
        if not (n <= len(rows) <= n + (0 if name == "12x1" else 3)):
            continue
        columns = SPLITS[name]
        # its rows cut as it says, the strips under it uncut, and a prior for how common the layout is
        score = sum(scores[i][columns] for i in range(n)) / n
        # rows printed as separate panels say how many columns there are
        score += sum(PANEL_WEIGHT * (1 if len(row.panels) == columns else -1) for row in rows[:n]
                     if len(row.panels) > 1) / n
        score -= sum(max(row.values()) for row in scores[n:]) / max(1, len(rows) - n)
        score += PRIOR[name]
        if best is None or score > best[0]:
            best = (score, name)
    if best is None:
        return Layout(None, tuple(rows), ())
    name = best[1]
    layout_rows = LAYOUTS[name]
    boxes: list[PixelBox] = []
    for i, names in enumerate(layout_rows):
        boxes += _row_boxes(rows[i], SPLITS[name], names, *bands[i], px_per_mm)
    segments = [(box.lead, read_box(mask, box, TIMES)) for box in boxes]
    unnamed = 0
    for i in range(len(layout_rows), len(rows)):
        lead = _rhythm_name(readings[i], segments)
        if lead is None:
            unnamed += 1
            continue
        boxes += _row_boxes(rows[i], 1, (lead,), *bands[i])
    return Layout(name, tuple(rows), tuple(boxes), unnamed)


def _rhythm_name(strip: np.ndarray, segments: list[tuple[str, np.ndarray]]) -> str | None:
    """The lead a full-length strip shows: the named segment it follows most closely over that segment's time.
    Two leads can look alike (II and aVF often do); lead II, the usual rhythm strip, wins unless another fits
    clearly better."""
    best, best_r = None, RHYTHM_MATCH
    for lead, segment in segments:
        seen = np.isfinite(segment) & np.isfinite(strip)
        if seen.sum() < FS // 2 or np.std(segment[seen]) == 0 or np.std(strip[seen]) == 0:
            continue
        r = float(np.corrcoef(segment[seen], strip[seen])[0, 1]) + (RHYTHM_PRIOR if lead == "II" else 0.0)
        if r > best_r:
            best, best_r = lead, r
    return best


def trace_tilt(mask: np.ndarray, max_deg: float = 6.0) -> float:
    """The angle (degrees, counter-clockwise as OpenCV rotates) that levels the rows of traces: the one whose
    rows of ink pile up sharpest. The trace itself says it: a page whose grid cleaning could not level (a photo
    at an angle, a grid too faint) still has its rows."""
    ys, xs = np.nonzero(mask)
    if ys.size < 100:
        return 0.0
    pick = np.random.default_rng(0).choice(ys.size, min(ys.size, 60_000), replace=False)
    ys, xs = ys[pick].astype(float), xs[pick].astype(float) - mask.shape[1] / 2

    def sharpness(angle: float) -> float:
        levelled = ys - xs * np.tan(np.radians(angle))
        counts = np.bincount(np.clip(levelled, 0, None).astype(int) // 2)
        return float(np.sum(counts.astype(float) ** 2))

    coarse = max(np.arange(-max_deg, max_deg + 1e-9, 0.25), key=sharpness)
    return float(max(np.arange(coarse - 0.25, coarse + 0.25 + 1e-9, 0.05), key=sharpness))


def digitise_mask(mask: np.ndarray, px_per_mm: float) -> tuple[Layout, Digitised]:
    """A cleaned page's layout and its 12 leads read back from its trace `mask`."""
    layout = find_layout(mask, px_per_mm)
    return layout, read_boxes(mask, layout.boxes)
