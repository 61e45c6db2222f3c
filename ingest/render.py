"""Draw a 12-lead waveform as a paper ECG: grid, calibration pulses, a lead layout and rhythm strips.

The same renderer turns DICOM waveforms into pages at intake and makes synthetic training pages,
so the model sees one drawing convention from both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LAYOUTS = {
    "3x4": (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6")),
    "6x2": (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6")),
    "12x1": tuple((name,) for name in STANDARD_LEADS),
    "2x6": (STANDARD_LEADS[:6], STANDARD_LEADS[6:]),
}
LAYOUT_3X4 = LAYOUTS["3x4"]
PAPER_MM = {"a4": (297.0, 210.0), "letter": (279.4, 215.9)}
GRID_COLOURS = {  # (minor, major) in BGR
    "red": ((205, 205, 255), (110, 110, 235)),
    "pink": ((225, 215, 255), (160, 140, 245)),
    "green": ((205, 240, 205), (120, 200, 120)),
    "blue": ((250, 225, 205), (215, 160, 110)),
    "grey": ((215, 215, 215), (150, 150, 150)),
    "orange": ((200, 228, 255), (90, 165, 245)),
    "purple": ((240, 215, 235), (185, 120, 165)),
    "black": ((222, 222, 222), (125, 125, 125)),  # a photocopy: dark major lines
    "none": (None, None),
}

_WHITE = (255, 255, 255)
PAGE_SECONDS = 10.0  # what a paper ECG shows; a longer recording is drawn from its start


@dataclass(frozen=True)
class PaperStyle:
    """Physical drawing conventions; colours are BGR as OpenCV uses them."""

    dpi: int = 200
    paper_mm: tuple[float, float] = (297.0, 210.0)
    speed_mm_s: float = 25.0
    gain_mm_mv: float = 10.0
    grid_minor_bgr: tuple[int, int, int] | None = (215, 210, 255)
    grid_major_bgr: tuple[int, int, int] | None = (140, 130, 240)
    trace_bgr: tuple[int, int, int] = (20, 20, 20)
    trace_mm: float = 0.3
    rhythm_leads: Sequence[str] = ("II",)  # full-length strips under the layout (none for 12x1)
    layout: str = "3x4"
    header: Sequence[str] = field(default_factory=tuple)
    header_scale: float = 0.9
    header_left_mm: float = 10.0
    margins_mm: tuple[float, float, float, float] = (10.0, 25.0, 10.0, 5.0)  # grid box: left, top, right, bottom
    grid_weight: int = 1  # line width multiplier

    @classmethod
    def named(cls, grid: str = "red", paper: str = "a4", **kwargs) -> PaperStyle:
        """A style from a grid colour name and a paper size name."""
        minor, major = GRID_COLOURS[grid]
        return cls(grid_minor_bgr=minor, grid_major_bgr=major, paper_mm=PAPER_MM[paper], **kwargs)


def _mm_to_px(mm: float, dpi: int) -> float:
    return mm * dpi / 25.4


def _draw_grid(image: np.ndarray, style: PaperStyle, box_mm: tuple[float, float, float, float]) -> None:
    if style.grid_minor_bgr is None or style.grid_major_bgr is None:
        return
    left, top, right, bottom = box_mm
    dpi = style.dpi
    xs_mm = np.arange(left, right + 1e-6, 1.0)
    ys_mm = np.arange(top, bottom + 1e-6, 1.0)
    y0, y1 = round(_mm_to_px(top, dpi)), round(_mm_to_px(bottom, dpi))
    x0, x1 = round(_mm_to_px(left, dpi)), round(_mm_to_px(right, dpi))
    major_width = max(1, round(dpi / 150)) * style.grid_weight
    for major in (False, True):
        colour = style.grid_major_bgr if major else style.grid_minor_bgr
        width = major_width if major else style.grid_weight
        for index, x_mm in enumerate(xs_mm):
            if (index % 5 == 0) == major:
                x = round(_mm_to_px(x_mm, dpi))
                image[y0 : y1 + 1, x : x + width] = colour
        for index, y_mm in enumerate(ys_mm):
            if (index % 5 == 0) == major:
                y = round(_mm_to_px(y_mm, dpi))
                image[y : y + width, x0 : x1 + 1] = colour


def _polyline(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, style: PaperStyle) -> None:
    """The pen through the points; it lifts over a missing (NaN) sample rather than drawing it at zero."""
    points = np.stack([xs, ys], axis=1) * 16.0  # 4 fractional bits for sub-pixel placement
    shown = np.isfinite(points).all(axis=1)
    runs = [points] if shown.all() else [run for run in np.split(points, np.flatnonzero(np.diff(shown)) + 1)
                                          if np.isfinite(run).all() and len(run) > 1]
    thickness = max(1, round(_mm_to_px(style.trace_mm, style.dpi)))
    cv2.polylines(image, [run.astype(np.int32) for run in runs], False, style.trace_bgr, thickness, cv2.LINE_AA,
                  shift=4)


def _label(image: np.ndarray, text: str, x_px: float, y_px: float, style: PaperStyle, scale: float = 1.0) -> None:
    font_scale = 0.55 * scale * style.dpi / 100
    cv2.putText(image, text, (round(x_px), round(y_px)), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                style.trace_bgr, max(1, round(style.dpi / 120)), cv2.LINE_AA)


@dataclass(frozen=True)
class LeadBox:
    """Where one lead's segment lies on the page, in mm from the page's top-left corner: samples `start` to
    `stop` (exclusive) drawn from `x0_mm` at the style's speed, about a baseline in the middle of a row of
    `row_height_mm`. A digitiser reads the trace back from here; a benchmark knows the truth from it."""

    lead: str
    row: int
    start: int
    stop: int
    x0_mm: float
    baseline_mm: float
    row_height_mm: float


@dataclass(frozen=True)
class PageGeometry:
    """What `render_paper` draws where: every lead segment, and the calibration pulse that opens each row."""

    layout: str
    boxes: tuple[LeadBox, ...]
    trace_x0_mm: float  # where time 0 of every row is drawn
    pulse_x_mm: float
    pulse_width_mm: float
    speed_mm_s: float
    gain_mm_mv: float
    grid_box_mm: tuple[float, float, float, float]


def paper_geometry(style: PaperStyle, fs: float, leads: Sequence[str]) -> PageGeometry:
    """The geometry of a page in `style` for a recording of `leads` sampled at `fs` (no pixels drawn)."""
    layout = LAYOUTS[style.layout]
    rows = [list(row) for row in layout]
    rhythm = [] if style.layout == "12x1" else [name for name in style.rhythm_leads if name in leads]
    width_mm, height_mm = style.paper_mm
    left_mm, top_mm, right_mm, bottom_mm = style.margins_mm
    grid_box = (left_mm, top_mm, width_mm - right_mm, height_mm - bottom_mm)
    strip_mm = PAGE_SECONDS * style.speed_mm_s
    pulse_mm = 0.2 * style.speed_mm_s
    x_start_mm = (grid_box[0] + grid_box[2] - strip_mm - pulse_mm - 2.0) / 2
    trace_x0_mm = x_start_mm + pulse_mm + 2.0
    row_height_mm = (grid_box[3] - grid_box[1]) / (len(rows) + len(rhythm))
    samples_per_column = round(PAGE_SECONDS / len(rows[0]) * fs)
    segments = [(row_index, name, col * samples_per_column, (col + 1) * samples_per_column)
                for row_index, row in enumerate(rows) for col, name in enumerate(row)]
    segments += [(len(rows) + index, name, 0, round(PAGE_SECONDS * fs)) for index, name in enumerate(rhythm)]
    boxes = tuple(LeadBox(name, row, start, stop, trace_x0_mm + start / fs * style.speed_mm_s,
                          grid_box[1] + (row + 0.5) * row_height_mm, row_height_mm)
                  for row, name, start, stop in segments)
    return PageGeometry(style.layout, boxes, trace_x0_mm, x_start_mm, pulse_mm, style.speed_mm_s, style.gain_mm_mv,
                        grid_box)


def _draw_traces(page: np.ndarray, geometry: PageGeometry, by_name: dict[str, np.ndarray], fs: float,
                 style: PaperStyle) -> None:
    """What the pen draws of the signal: each row's calibration pulse and every lead segment."""
    px = _mm_to_px(1.0, style.dpi)
    pulse_mm = geometry.pulse_width_mm
    for box in geometry.boxes:
        if box.start == 0:  # the row's first segment: its calibration pulse before it
            pulse_x = np.array([0, 0.5, 0.5, pulse_mm - 0.5, pulse_mm - 0.5, pulse_mm]) + geometry.pulse_x_mm
            pulse_y = np.array([0, 0, 1, 1, 0, 0]) * -style.gain_mm_mv + box.baseline_mm
            _polyline(page, pulse_x * px, pulse_y * px, style)
        trace = by_name[box.lead][box.start:box.stop]
        t_mm = geometry.trace_x0_mm + (box.start + np.arange(trace.size)) / fs * style.speed_mm_s
        _polyline(page, t_mm * px, (box.baseline_mm - trace * style.gain_mm_mv) * px, style)


def trace_mask(signals_mv: np.ndarray, fs: float, leads: Sequence[str], style: PaperStyle) -> np.ndarray:
    """The pixels of `render_paper`'s page that the signal's pen covers (traces and calibration pulses, not the
    grid, labels or separators), as 0-255 coverage: the exact truth a trace segmenter learns from."""
    width_mm, height_mm = style.paper_mm
    mask = np.zeros((round(_mm_to_px(height_mm, style.dpi)), round(_mm_to_px(width_mm, style.dpi)), 3), np.uint8)
    by_name = {name: np.asarray(signals_mv[i], dtype=np.float64) for i, name in enumerate(leads)}
    _draw_traces(mask, paper_geometry(style, fs, list(by_name)), by_name, fs,
                 replace(style, trace_bgr=(255, 255, 255)))
    return mask[:, :, 0]


def render_paper(
    signals_mv: np.ndarray, fs: float, leads: Sequence[str], style: PaperStyle | None = None
) -> np.ndarray:
    """Render `signals_mv` (leads x samples, millivolts) as a BGR uint8 page in `style.layout`."""
    style = style or PaperStyle()
    signals_mv = np.asarray(signals_mv, dtype=np.float64)
    if signals_mv.ndim != 2 or signals_mv.shape[0] != len(leads):
        raise ValueError(f"signals shape {signals_mv.shape} does not match {len(leads)} lead names")
    by_name = {name: signals_mv[i] for i, name in enumerate(leads)}
    layout = LAYOUTS[style.layout]
    missing = [name for row in layout for name in row if name not in by_name]
    if missing:
        raise ValueError(f"leads missing for the {style.layout} layout: {missing}")

    dpi = style.dpi
    width_mm, height_mm = style.paper_mm
    page = np.full((round(_mm_to_px(height_mm, dpi)), round(_mm_to_px(width_mm, dpi)), 3), _WHITE, np.uint8)
    geometry = paper_geometry(style, fs, list(by_name))
    _draw_grid(page, style, geometry.grid_box_mm)
    px = _mm_to_px(1.0, dpi)
    left_mm, _, _, bottom_mm = style.margins_mm

    line_mm = 6.0 * style.header_scale / 0.9
    for text_row, text in enumerate(style.header):
        _label(page, text, style.header_left_mm * px, (2.0 + line_mm * (text_row + 1)) * px, style,
               scale=style.header_scale)

    _draw_traces(page, geometry, by_name, fs, style)
    for box in geometry.boxes:
        baseline_mm = box.baseline_mm
        _label(page, box.lead, (box.x0_mm + 1.0) * px, (baseline_mm - min(0.35 * box.row_height_mm, 6.0)) * px,
               style)
        if box.start > 0:
            x_sep, y_sep = box.x0_mm * px, baseline_mm * px
            cv2.line(page, (round(x_sep), round(y_sep - 3 * px)), (round(x_sep), round(y_sep + 3 * px)),
                     style.trace_bgr, max(1, round(dpi / 150)))

    footer = f"{style.speed_mm_s:g} mm/s   {style.gain_mm_mv:g} mm/mV"
    _label(page, footer, left_mm * px, (height_mm - min(1.5, bottom_mm / 3)) * px, style, scale=0.8)
    return page
