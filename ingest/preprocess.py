"""The one image-cleaning path shared by training and inference.

Every page the model sees, at training or at intake, goes through `preprocess`. Its output depends
on `PREPROCESS_VERSION` and on which steps are on; a bundle records both, and one trained under
another version is refused at load.

The steps, in order (each can be switched off):
  page          find the sheet in a photo and warp its four corners to a rectangle
  illumination  divide out a background estimated with a max filter at low resolution (shadows, stains)
  deskew        rotate by the angle whose row projection of dark pixels is sharpest (grid lines, baselines)
  creases       divide each row and column by its paper brightness (folds are straight bands)
  grid          map the pen's darkness to black and anything near paper to white; a coloured grid is
                already faint because the page is read as its brightest channel
  crop          cut to the trace area: the long strokes of the traces (and the tall calibration pulses),
                leaving out header and footer text, logos, margins and cut-off edges
  scale         measure the page's own millimetre (the grid pitch, else the 10-second trace width) and
                draw the trace area at a fixed scale, `CANVAS_MM` across the model input, so DPI, paper
                size, margins and layout position do not change what the model sees
then `letterbox` to the model's input, after a min filter that keeps thin traces through the downscale.
Everything runs on a working copy about 1,200 pixels wide (an integer downscale), so a 200-DPI A4
page costs a few tens of milliseconds on one core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ingest.page import Page, PreparedPage

PREPROCESS_VERSION = "3"
STEPS = ("page", "illumination", "deskew", "creases", "grid", "crop", "scale")
WORK_WIDTH = 1200
THUMBNAIL_WIDTH = 480  # the review UI's page preview
MAX_SKEW_DEG = 10.0
PAGE_ASPECT = (1.2, 1.6)  # long side over short side of A4 (1.41) and US letter (1.29), with perspective slack
CANVAS_MM = 280.0  # the model input's width in millimetres of paper: a 10 s strip (250 mm) and its margins
STRIP_MM = 250.0  # ten seconds at 25 mm/s, the width of every standard 12-lead layout
GRID_TOLERANCE = 1.15  # how far the grid's pitch may lie from the trace width's rough figure
PX_PER_MM_RANGE = (1.5, 16.0)  # at working resolution; outside it a periodicity is not a grid
MIN_AREA_MM = 60.0  # strokes narrower than this together are pulses or a stray mark, not 10 s of trace
# Columns summed into one sample of the skew search's coarse and fine copies (a row projection needs few):
# wider blocks smear a line tilted by the skew over more rows and move near-tied fine candidates.
SKEW_BLOCKS = (4, 2)
_BOX5 = np.ones((5, 5), np.uint8)
_DARKNESS = np.clip(250 - np.arange(256), 0, 110).astype(np.uint8)  # grid darkness of each grey level


@dataclass(frozen=True)
class Cleaned:
    """The model input and, when asked for, every intermediate stage by name."""

    image: np.ndarray
    stages: list[tuple[str, np.ndarray]]
    skew_deg: float = 0.0
    page_found: bool = False
    px_per_mm: float | None = None  # at working resolution, after the page warp
    scale_source: str = "none"  # "grid", "trace_width" or "none"
    trace_area_found: bool = False
    work_factor: int = 1  # the integer downscale from input pixels to working resolution
    # input pixel (x, y, 1) -> pixel of the full-page stages after the page warp and deskew (before the crop):
    # what lets a reading of the cleaned sheet be drawn on the original, or a drawing's truth follow the page
    sheet_transform: np.ndarray = field(default_factory=lambda: np.eye(3))


def work_factor(width: int) -> int:
    """The integer downscale from a page `width` pixels wide to the working copy every cleaning step runs on.

    Decoders that can decode smaller for free (JPEG's DCT scaling, PDF rasterised at a lower DPI) use it to
    produce the working copy directly; `clean` then finds a factor of 1 and works on the page as it came.
    """
    return max(1, round(width / WORK_WIDTH))


def downscale_matrix(factor: int) -> np.ndarray:
    """The homography of an INTER_AREA downscale by an integer `factor`, which maps pixel centres:
    x' = (x + 0.5) / factor - 0.5."""
    shift = 0.5 / factor - 0.5
    return np.array([[1 / factor, 0, shift], [0, 1 / factor, shift], [0, 0, 1]])


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grayscale from grayscale, BGR or BGRA input (luminance, for display and tests)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"unexpected image shape {image.shape}")


def brightest_channel(image: np.ndarray) -> np.ndarray:
    """Gray where a red, green or blue grid line is nearly paper-white but a dark pen stays dark."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        b, g, r = cv2.split(image)[:3]  # contiguous planes: cv2.max on strided views would copy each one
        return cv2.max(cv2.max(b, g), r)
    raise ValueError(f"unexpected image shape {image.shape}")


def letterbox(gray: np.ndarray, size: tuple[int, int], max_scale: float | None = None) -> np.ndarray:
    """Fit into (height, width) keeping the aspect ratio, no larger than `max_scale`; pad with white paper."""
    height, width = size
    scale = min(height / gray.shape[0], width / gray.shape[1], max_scale or np.inf)
    new_h, new_w = max(1, round(gray.shape[0] * scale)), max(1, round(gray.shape[1] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (new_w, new_h), interpolation=interpolation)
    out = np.full((height, width), 255, np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def _order_corners(points: np.ndarray) -> np.ndarray:
    """Top-left, top-right, bottom-right, bottom-left."""
    points = points.reshape(4, 2).astype(np.float32)
    total, diff = points.sum(axis=1), np.diff(points, axis=1).ravel()
    return np.float32([points[np.argmin(total)], points[np.argmin(diff)], points[np.argmax(total)],
                       points[np.argmax(diff)]])


def find_page(gray: np.ndarray) -> np.ndarray | None:
    """The sheet's four corners in a photo (paper brighter than the desk), or None for a flat scan."""
    scale = 400 / max(gray.shape)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (5, 5), 0)
    _, paper = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    paper = cv2.morphologyEx(paper, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))  # bridge traces and grid
    contours, _ = cv2.findContours(paper, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    area = cv2.contourArea(hull) / (small.shape[0] * small.shape[1])
    if not 0.25 < area < 0.97:  # nearly the whole frame: a scan, nothing to warp
        return None
    quad = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
    if len(quad) != 4 or not cv2.isContourConvex(quad):
        return None
    corners = _order_corners(quad)
    tl, tr, br, bl = corners
    width = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    ratio = max(width, height) / max(min(width, height), 1.0)
    if not PAGE_ASPECT[0] <= ratio <= PAGE_ASPECT[1]:  # a shadow or stain split the sheet: not a whole page
        return None
    return corners / scale


def page_warp(corners: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The homography that flattens the sheet with these corners, and the (width, height) it fills."""
    tl, tr, br, bl = corners
    width = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    target = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    return cv2.getPerspectiveTransform(corners.astype(np.float32), target), (width, height)


def warp_page(gray: np.ndarray, corners: np.ndarray) -> np.ndarray:
    matrix, size = page_warp(corners)
    return cv2.warpPerspective(gray, matrix, size, flags=cv2.INTER_LINEAR, borderValue=255)


def flatten_illumination(gray: np.ndarray) -> np.ndarray:
    """Divide by the paper's own brightness: a max filter at 1/8 scale removes ink, a blur smooths the rest."""
    small = cv2.resize(gray, None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA)
    background = cv2.GaussianBlur(cv2.dilate(small, _BOX5), (0, 0), 2.0)
    # The floor of 1 is taken before the upscale: interpolating values >= 1 cannot give less than 1.
    background = cv2.resize(np.maximum(background, 1), (gray.shape[1], gray.shape[0]),
                            interpolation=cv2.INTER_LINEAR)
    return cv2.divide(gray, background, scale=255)


def _column_blocks(dark: np.ndarray, block: int) -> np.ndarray:
    """Float means of each `block` adjacent columns: the row projection needs no finer horizontal detail."""
    height, width = dark.shape
    width -= width % block
    return cv2.resize(dark[:, :width].astype(np.float32), (width // block, height), interpolation=cv2.INTER_AREA)


def _row_sharpness(blocks: np.ndarray, block: int, width: int, angle: float) -> float:
    """How sharp the row projection of a `width`-pixel image, given as `_column_blocks`, is once rotated by `angle`.

    The rotation about the image's centre is applied to the blocks, each moving as its centre column does:
    the warp is `block` times smaller and its rows are those of the whole image.
    """
    height = blocks.shape[0]
    (cos, sin, shift_x), (minus_sin, _, shift_y) = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    middle = (block - 1) / 2  # a block's centre column, counted from its first
    matrix = np.float64([[cos, sin / block, (cos * middle + shift_x - middle) / block],
                         [minus_sin * block, cos, minus_sin * middle + shift_y]])
    rotated = cv2.warpAffine(blocks, matrix, (blocks.shape[1], height), flags=cv2.INTER_LINEAR)
    rows = cv2.reduce(rotated, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).ravel()
    return float(np.square(np.diff(rows)).sum())


def estimate_skew(flat_luminance: np.ndarray, below: int = 235) -> float:
    """Rotation in degrees (counter-clockwise positive) that makes grid lines and baselines horizontal.

    Works on illumination-flattened luminance, where paper is ~255 and every grid line counts as a dark
    row: grid lines are the straightest reference a page has, traces alone drift with the baseline.
    Whole degrees, then quarter degrees on a 320-pixel copy; then 0.05 degrees on a 640-pixel one.
    Each copy is searched as its `_column_blocks`.
    """
    scale = 640 / flat_luminance.shape[1]
    fine = cv2.resize(flat_luminance, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    fine = cv2.threshold(fine, below - 1, 255, cv2.THRESH_BINARY_INV)[1]
    coarse = cv2.pyrDown(fine)
    coarse_block, fine_block = SKEW_BLOCKS
    blocks = _column_blocks(coarse, coarse_block)
    # Blurring across the lines widens the peak of the sharpness curve so a coarse step cannot jump over it.
    # The blur is vertical, so it is applied to the column blocks; its kernel heights are those OpenCV picks
    # for these sigmas on 8-bit pixels.
    wide = cv2.GaussianBlur(blocks, (1, 25), sigmaX=0, sigmaY=4)
    medium = cv2.GaussianBlur(blocks, (1, 11), sigmaX=0, sigmaY=1.5)
    angle = 0.0
    for dark, block, width, span, step in ((wide, coarse_block, coarse.shape[1], MAX_SKEW_DEG, 1.0),
                                           (medium, coarse_block, coarse.shape[1], 0.75, 0.25),
                                           (_column_blocks(fine, fine_block), fine_block, fine.shape[1], 0.2, 0.05)):
        candidates = np.arange(angle - span, angle + span + 1e-6, step)
        angle = float(max(candidates, key=lambda a: _row_sharpness(dark, block, width, float(a))))
        if span == MAX_SKEW_DEG and abs(angle) >= MAX_SKEW_DEG:
            return 0.0  # the best angle is the edge of the search: no reliable horizontal structure
    return round(angle, 2)


def _rotation(shape: tuple[int, ...], angle: float) -> np.ndarray:
    return cv2.getRotationMatrix2D((shape[1] / 2, shape[0] / 2), angle, 1.0)


def rotate(gray: np.ndarray, angle: float) -> np.ndarray:
    matrix = _rotation(gray.shape, angle)
    return cv2.warpAffine(gray, matrix, (gray.shape[1], gray.shape[0]), flags=cv2.INTER_LINEAR, borderValue=255)


def _interpolate(low: np.ndarray | int, high: np.ndarray | int, fraction: float) -> np.ndarray | float:
    """`np.percentile`'s linear interpolation between neighbouring order statistics, to the last bit."""
    difference = high - low
    return high - difference * (1 - fraction) if fraction >= 0.5 else low + difference * fraction


def _order_indices(count: int, q: float) -> tuple[int, int, float]:
    """The order statistics `np.percentile` (linear) interpolates between for `q` of `count` values, and how far."""
    virtual = (count - 1) * (q / 100)
    if virtual >= count - 1:
        return count - 1, count - 1, 0.0
    below = int(np.floor(virtual))
    return below, below + 1, virtual - below


def _row_percentiles(values: np.ndarray, q: float) -> np.ndarray:
    """`np.percentile(values, q, axis=1)`, partitioning contiguous rows (numpy moves the axis and partitions across)."""
    below, above, fraction = _order_indices(values.shape[1], q)
    ordered = np.partition(np.ascontiguousarray(values), (below, above), axis=1)
    return _interpolate(ordered[:, below], ordered[:, above], fraction)


def _percentile_u8(values: np.ndarray, q: float) -> float:
    """`np.percentile(values, q)` of uint8 values, read off their histogram instead of partitioning them."""
    counts = cv2.calcHist([np.ascontiguousarray(values)], [0], None, [256], [0, 256]).ravel()
    cumulative = np.cumsum(counts, dtype=np.float64)
    below, above, fraction = _order_indices(values.size, q)
    low, high = np.searchsorted(cumulative, (below, above), side="right")
    return float(_interpolate(int(low), int(high), fraction))


def _divide(gray: np.ndarray, row_level: np.ndarray, col_level: np.ndarray) -> np.ndarray:
    """Pixels over their row's level, then their column's, in float32 and truncated: the crease step's arithmetic."""
    out = gray.astype(np.float32)
    out /= row_level.reshape(-1, 1)
    out /= col_level.reshape(1, -1)
    return np.clip(out, 0, 255).astype(np.uint8)


def flatten_creases(gray: np.ndarray) -> np.ndarray:
    """Straight folds darken whole rows or columns: divide each by its paper level (a high percentile).

    Each profile is taken at full resolution along its own axis and from every 8th pixel across it. Rows and
    columns at the median paper level or brighter are divided by 1, so only the pixels of darker ones change.
    """
    levels = []
    for values in (gray[:, ::8], gray[::8, :].T):
        profile = _row_percentiles(values, 80).astype(np.float32)
        levels.append(np.clip(profile / max(float(np.median(profile)), 1.0), 0.3, 1.0))
    row_level, col_level = levels
    dark_rows, dark_cols = np.flatnonzero(row_level < 1), np.flatnonzero(col_level < 1)
    if len(dark_rows) * gray.shape[1] + len(dark_cols) * gray.shape[0] > gray.size // 2:
        return _divide(gray, row_level, col_level)
    out = gray.copy()
    if len(dark_rows):
        out[dark_rows] = _divide(gray[dark_rows], row_level[dark_rows], col_level)
    if len(dark_cols):
        out[:, dark_cols] = _divide(gray[:, dark_cols], row_level, col_level[dark_cols])
    return out


def suppress_grid(gray: np.ndarray) -> np.ndarray:
    """Stretch so the pen is black and anything a grid or paper leaves is white (one lookup table)."""
    dark = _percentile_u8(gray[::4, ::4], 0.3)
    low, high = dark + 0.12 * (255 - dark), dark + 0.62 * (255 - dark)
    lut = np.clip((np.arange(256, dtype=np.float32) - low) / max(high - low, 1.0) * 255, 0, 255).astype(np.uint8)
    return cv2.LUT(gray, lut)


def _ink_box(gray: np.ndarray, margin: float = 0.02) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the box holding 99% of the ink pixels, with a small margin."""
    step = 4
    dark = gray[::step, ::step] < 128
    ys, xs = np.nonzero(dark)
    if len(ys) < 50:
        return 0, gray.shape[0], 0, gray.shape[1]
    top, bottom = np.percentile(ys, [0.5, 99.5]) * step
    left, right = np.percentile(xs, [0.5, 99.5]) * step
    pad_y, pad_x = margin * gray.shape[0], margin * gray.shape[1]
    top, left = int(max(0, top - pad_y)), int(max(0, left - pad_x))
    bottom, right = int(min(gray.shape[0], bottom + pad_y)), int(min(gray.shape[1], right + pad_x))
    if bottom - top < gray.shape[0] * 0.2 or right - left < gray.shape[1] * 0.2:
        return 0, gray.shape[0], 0, gray.shape[1]
    return top, bottom, left, right


def grid_spectra(flat_luminance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectra of the grid's column and row profiles, and their frequencies (cycles per pixel).

    Grid lines are the page's strictly periodic structure; the pen (and its heartbeats, which repeat
    too) is masked out, and slow shading is taken off before the transform.
    """
    # The pen grown by two pixels is where a 5x5 min filter falls below its level; darkness is a lookup, so
    # the profiles are exact integer sums (as a float32 mean of these integers is).
    pen_free = cv2.threshold(cv2.erode(flat_luminance, _BOX5), 109, 255, cv2.THRESH_BINARY)[1]
    darkness = cv2.bitwise_and(cv2.LUT(flat_luminance, _DARKNESS), pen_free)
    size = 8 * max(darkness.shape)  # zero padding: sub-pixel resolution of the peak
    spectra = []
    for axis in (0, 1):
        sums = cv2.reduce(darkness, axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
        profile = (sums / darkness.shape[axis]).astype(np.float32).reshape(1, -1)
        slow = cv2.blur(profile, (61, 1), borderType=cv2.BORDER_REFLECT)
        detrended = (profile - slow).ravel() * np.hanning(profile.size)
        spectra.append(np.abs(np.fft.rfft(detrended, size)) ** 2)
    return spectra[0], spectra[1], np.fft.rfftfreq(size)


def grid_px_per_mm(flat_luminance: np.ndarray, expected_px_per_mm: float, min_contrast: float = 30.0
                   ) -> float | None:
    """Pixels per millimetre from the 5 mm pitch of the grid, or None when the page shows no grid.

    `expected_px_per_mm` (from the trace width, good to about 20%) only says which line family is which:
    a grid's spectrum peaks at the 5 mm pitch, its harmonics and the 1 mm minor lines. Only the
    5 mm and 1 mm peaks are looked for, within `GRID_TOLERANCE` of where they are expected, so neither a
    harmonic nor a periodic artefact can pass for the pitch; the clearer one gives the exact figure.
    """
    columns, rows, frequencies = grid_spectra(flat_luminance)
    found = []
    for spectrum in (columns, rows):
        best: tuple[float, float] | None = None
        for harmonic in (1, 5):  # the 5 mm major lines and the 1 mm minor ones
            expected = harmonic / (5 * expected_px_per_mm)  # cycles per pixel
            band = (frequencies >= expected / GRID_TOLERANCE) & (frequencies <= min(expected * GRID_TOLERANCE, 0.45))
            if band.sum() < 3:
                continue
            peak = int(np.argmax(np.where(band, spectrum, 0)))
            contrast = spectrum[peak] / max(float(np.median(spectrum[band])), 1e-12)
            if contrast >= min_contrast and (best is None or contrast > best[1]):
                best = (harmonic / (5 * frequencies[peak]), contrast)
        if best is not None:
            found.append(best)
    if not found:
        return None
    if len(found) == 2 and max(found)[0] / min(found)[0] > 1.08:
        return max(found, key=lambda item: item[1])[0]  # a warped photo: trust the clearer axis
    return float(np.mean([ppm for ppm, _ in found]))


@dataclass(frozen=True)
class TraceArea:
    """Where the traces are on the cleaned page (pixels) and how wide the widest row is."""

    top: int
    bottom: int
    left: int
    right: int
    found: bool


def _strokes(ink: np.ndarray, px_per_mm: float) -> np.ndarray:
    """Connected-component stats of the ink that is trace-long (12 mm) or pulse-tall (7 mm), and sparse.

    A pen line fills a small part of its box; a word in a large bold font, joined letter to letter,
    can be as long as a trace but fills a good part of its box.
    """
    # BBDT finds the same components as the default algorithm and gathers their statistics several times
    # faster on one core, but only when both sides are even: a blank row or column evens them.
    ink = cv2.copyMakeBorder(ink, 0, ink.shape[0] % 2, 0, ink.shape[1] % 2, cv2.BORDER_CONSTANT, value=0)
    stats = cv2.connectedComponentsWithStatsWithAlgorithm(ink, 8, cv2.CV_32S, cv2.CCL_BBDT)[2][1:]
    width, height = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    fill = stats[:, cv2.CC_STAT_AREA] / np.maximum(width * height, 1)
    return stats[((width >= 12 * px_per_mm) | (height >= 7 * px_per_mm)) & (fill < 0.22)]


def _width(strokes: np.ndarray) -> int:
    """How far across the page the strokes reach, in pixels (0 for none)."""
    if len(strokes) == 0:
        return 0
    lefts = strokes[:, cv2.CC_STAT_LEFT]
    return int((lefts + strokes[:, cv2.CC_STAT_WIDTH]).max() - lefts.min())


def find_trace_area(gray: np.ndarray, px_per_mm: float | None = None, pad_mm: float = 3.0) -> TraceArea:
    """The box around the long trace strokes and calibration pulses; header text, logos and margins stay out.

    A lead's trace is one connected stroke at least a couple of seconds long; characters are a few
    millimetres. Without a known scale, the page is taken as about 290 mm wide for these thresholds.
    Falls back to the box holding the ink when no stroke qualifies.
    """
    ppm = px_per_mm or gray.shape[1] / 290.0
    strokes = _strokes(cv2.threshold(gray, 127, 1, cv2.THRESH_BINARY_INV)[1], ppm)
    if _width(strokes) < MIN_AREA_MM * ppm:
        # A hairline downscaled to the working copy is grey and broken: lenient ink, joined. Also when only the
        # calibration pulses stood out (a thin coloured pen): a box around them alone holds no trace.
        strokes = _strokes(cv2.dilate(cv2.threshold(gray, 169, 1, cv2.THRESH_BINARY_INV)[1], np.ones((3, 3), np.uint8)),
                           ppm)
    if len(strokes) == 0:
        top, bottom, left, right = _ink_box(gray)
        return TraceArea(top, bottom, left, right, found=False)
    pad = pad_mm * ppm
    left = int(max(0, strokes[:, cv2.CC_STAT_LEFT].min() - pad))
    top = int(max(0, strokes[:, cv2.CC_STAT_TOP].min() - pad))
    right = int(min(gray.shape[1], (strokes[:, cv2.CC_STAT_LEFT] + strokes[:, cv2.CC_STAT_WIDTH]).max() + pad))
    bottom = int(min(gray.shape[0], (strokes[:, cv2.CC_STAT_TOP] + strokes[:, cv2.CC_STAT_HEIGHT]).max() + pad))
    return TraceArea(top, bottom, left, right, found=True)


def keep_thin_traces(gray: np.ndarray, size: tuple[int, int], max_scale: float | None = None) -> np.ndarray:
    """A min filter as wide as the downscale factor, so a one-pixel trace survives INTER_AREA as ink."""
    scale = min(size[0] / gray.shape[0], size[1] / gray.shape[1], max_scale or np.inf)
    k = int(1 / scale)
    return cv2.erode(gray, np.ones((k, k), np.uint8)) if k >= 2 else gray


def measure_px_per_mm(flat_luminance: np.ndarray, area: TraceArea) -> tuple[float | None, str]:
    """Pixels per millimetre and where the figure came from: "grid", "trace_width" or "none".

    The grid's pitch when there is one; otherwise the widest trace row taken as ten seconds at
    25 mm/s (every standard layout spans that), plus the calibration pulse and pads.
    """
    if not area.found:
        return None, "none"
    from_width = (area.right - area.left) / (STRIP_MM + 15.0)
    from_grid = grid_px_per_mm(flat_luminance, from_width)
    if from_grid is not None and PX_PER_MM_RANGE[0] <= from_grid <= PX_PER_MM_RANGE[1]:
        return from_grid, "grid"
    return from_width, "trace_width"


def clean(image: np.ndarray, size: tuple[int, int], steps: tuple[str, ...] = STEPS, keep_stages: bool = False
          ) -> Cleaned:
    """Run the enabled steps on one page; `keep_stages` returns every intermediate image as well."""
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown preprocessing steps {sorted(unknown)}; known: {STEPS}")
    stages: list[tuple[str, np.ndarray]] = []

    def record(name: str, stage: np.ndarray) -> np.ndarray:
        if keep_stages:
            stages.append((name, stage))
        return stage

    factor = work_factor(image.shape[1])
    sheet = downscale_matrix(factor)
    if factor >= 2:  # an integer factor keeps INTER_AREA on its fast path
        image = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    gray = brightest_channel(image)
    # The grid, faint in `gray`, anchors the angle and measures the millimetre.
    luminance = to_gray(image) if {"deskew", "scale"} & set(steps) else gray
    record("input", gray)
    corners = find_page(gray) if "page" in steps else None
    if corners is not None:
        sheet = page_warp(corners)[0] @ sheet
        gray = record("page", warp_page(gray, corners))
        luminance = warp_page(luminance, corners) if luminance is not gray else gray
    shared = luminance is gray  # a grayscale page: one image serves both, flattened and rotated once
    if "illumination" in steps:
        gray = record("illumination", flatten_illumination(gray))
    flat_luminance = None
    if {"deskew", "scale"} & set(steps):
        flat_luminance = gray if shared and "illumination" in steps else flatten_illumination(luminance)
    skew = 0.0
    if "deskew" in steps:
        skew = estimate_skew(flat_luminance)
        if abs(skew) >= 0.1:
            sheet = np.vstack([_rotation(gray.shape, skew), [0, 0, 1]]) @ sheet
            rotated = rotate(gray, skew)
            flat_luminance = rotated if flat_luminance is gray else rotate(flat_luminance, skew)
            gray = rotated
        record("deskew", gray)
    for name, operation in (("creases", flatten_creases), ("grid", suppress_grid)):
        if name in steps:
            gray = record(name, operation(gray))
    area = TraceArea(0, gray.shape[0], 0, gray.shape[1], found=False)
    if "crop" in steps:
        area = find_trace_area(gray)
        gray = record("crop", gray[area.top : area.bottom, area.left : area.right])
    px_per_mm, source = measure_px_per_mm(flat_luminance, area) if "scale" in steps else (None, "none")
    max_scale = size[1] / (CANVAS_MM * px_per_mm) if px_per_mm else None
    result = letterbox(keep_thin_traces(gray, size, max_scale), size, max_scale)
    record("model_input", result)
    return Cleaned(image=result, stages=stages, skew_deg=skew, page_found=corners is not None, px_per_mm=px_per_mm,
                   scale_source=source, trace_area_found=area.found, work_factor=factor, sheet_transform=sheet)


def thumbnail(image: np.ndarray, width: int) -> np.ndarray:
    """A preview `width` pixels wide: INTER_AREA by an integer factor (its fast path), then INTER_LINEAR."""
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    factor = image.shape[1] // width
    if factor >= 2:
        image = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def preprocess(image: np.ndarray, size: tuple[int, int], steps: tuple[str, ...] = STEPS) -> np.ndarray:
    """Page pixels -> the model's (height, width) uint8 grayscale input."""
    return clean(image, size, steps).image


@dataclass(frozen=True)
class Preparation:
    """How intake turns a decoded page into stored images; picklable, so the decoder process can apply it."""

    size: tuple[int, int]
    steps: tuple[str, ...] = STEPS
    thumbnail_width: int = THUMBNAIL_WIDTH

    @property
    def key(self) -> str:
        """Names the stored model input exactly: a page made under another key is never fed to this model."""
        height, width = self.size
        return f"v{PREPROCESS_VERSION}:{height}x{width}:{','.join(self.steps)}"

    def __call__(self, page: Page) -> PreparedPage:
        return PreparedPage(preprocess(page.image, self.size, self.steps), thumbnail(page.image, self.thumbnail_width),
                            page.page_no, page.source, page.metadata)
