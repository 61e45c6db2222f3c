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
  crop          cut to the area that holds ink
then `letterbox` to the model's input, after a min filter that keeps thin traces through the downscale.
Everything runs on a working copy about 1,200 pixels wide (an integer downscale), so a 200-DPI A4
page costs a few tens of milliseconds on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ingest.page import Page, PreparedPage

PREPROCESS_VERSION = "2"
STEPS = ("page", "illumination", "deskew", "creases", "grid", "crop")
WORK_WIDTH = 1200
THUMBNAIL_WIDTH = 480  # the review UI's page preview
MAX_SKEW_DEG = 10.0
PAGE_ASPECT = (1.2, 1.6)  # long side over short side of A4 (1.41) and US letter (1.29), with perspective slack


@dataclass(frozen=True)
class Cleaned:
    """The model input and, when asked for, every intermediate stage by name."""

    image: np.ndarray
    stages: list[tuple[str, np.ndarray]]
    skew_deg: float = 0.0
    page_found: bool = False


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
        b, g, r = image[:, :, 0], image[:, :, 1], image[:, :, 2]
        return cv2.max(cv2.max(b, g), r)
    raise ValueError(f"unexpected image shape {image.shape}")


def letterbox(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit into (height, width) keeping the aspect ratio; pad with white so the page stays paper."""
    height, width = size
    scale = min(height / gray.shape[0], width / gray.shape[1])
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


def warp_page(gray: np.ndarray, corners: np.ndarray) -> np.ndarray:
    tl, tr, br, bl = corners
    width = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    target = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    return cv2.warpPerspective(gray, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=255)


def flatten_illumination(gray: np.ndarray) -> np.ndarray:
    """Divide by the paper's own brightness: a max filter at 1/8 scale removes ink, a blur smooths the rest."""
    small = cv2.resize(gray, None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA)
    background = cv2.dilate(small, np.ones((5, 5), np.uint8))
    background = cv2.GaussianBlur(background, (0, 0), 2.0)
    background = cv2.resize(background, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(gray, np.maximum(background, 1), scale=255)


def _ink_threshold(gray: np.ndarray) -> int:
    """Between the pen's darkness (a low percentile) and paper white."""
    sample = gray[::4, ::4]
    dark = float(np.percentile(sample, 0.5))
    return int(dark + 0.55 * (255 - dark))


def _row_sharpness(dark: np.ndarray, angle: float) -> float:
    centre = (dark.shape[1] / 2, dark.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    rotated = cv2.warpAffine(dark, matrix, (dark.shape[1], dark.shape[0]), flags=cv2.INTER_LINEAR)
    rows = cv2.reduce(rotated, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).ravel()
    return float(np.square(np.diff(rows)).sum())


def estimate_skew(flat_luminance: np.ndarray, below: int = 235) -> float:
    """Rotation in degrees (counter-clockwise positive) that makes grid lines and baselines horizontal.

    Works on illumination-flattened luminance, where paper is ~255 and every grid line counts as a dark
    row: grid lines are the straightest reference a page has, traces alone drift with the baseline.
    Whole degrees, then quarter degrees on a 320-pixel copy; then 0.05 degrees on a 640-pixel one.
    """
    scale = 640 / flat_luminance.shape[1]
    fine = cv2.resize(flat_luminance, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    fine = np.where(fine < below, 255, 0).astype(np.uint8)
    coarse = cv2.pyrDown(fine)
    # Blurring across the lines widens the peak of the sharpness curve so a coarse step cannot jump over it.
    wide = cv2.GaussianBlur(coarse, (1, 0), sigmaX=0, sigmaY=4)
    medium = cv2.GaussianBlur(coarse, (1, 0), sigmaX=0, sigmaY=1.5)
    angle = 0.0
    for dark, span, step in ((wide, MAX_SKEW_DEG, 1.0), (medium, 0.75, 0.25), (fine, 0.2, 0.05)):
        candidates = np.arange(angle - span, angle + span + 1e-6, step)
        angle = float(max(candidates, key=lambda a: _row_sharpness(dark, float(a))))
        if span == MAX_SKEW_DEG and abs(angle) >= MAX_SKEW_DEG:
            return 0.0  # the best angle is the edge of the search: no reliable horizontal structure
    return round(angle, 2)


def rotate(gray: np.ndarray, angle: float) -> np.ndarray:
    centre = (gray.shape[1] / 2, gray.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    return cv2.warpAffine(gray, matrix, (gray.shape[1], gray.shape[0]), flags=cv2.INTER_LINEAR, borderValue=255)


def flatten_creases(gray: np.ndarray) -> np.ndarray:
    """Straight folds darken whole rows or columns: divide each by its paper level (a high percentile).

    Each profile is taken at full resolution along its own axis and from every 8th pixel across it.
    """
    out = gray.astype(np.float32)
    rows = np.percentile(gray[:, ::8], 80, axis=1).astype(np.float32)
    cols = np.percentile(gray[::8, :], 80, axis=0).astype(np.float32)
    for profile, shape in ((rows, (-1, 1)), (cols, (1, -1))):
        level = np.clip(profile / max(float(np.median(profile)), 1.0), 0.3, 1.0)
        out /= level.reshape(shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def suppress_grid(gray: np.ndarray) -> np.ndarray:
    """Stretch so the pen is black and anything a grid or paper leaves is white (one lookup table)."""
    sample = gray[::4, ::4]
    dark = float(np.percentile(sample, 0.3))
    low, high = dark + 0.12 * (255 - dark), dark + 0.62 * (255 - dark)
    lut = np.clip((np.arange(256, dtype=np.float32) - low) / max(high - low, 1.0) * 255, 0, 255).astype(np.uint8)
    return cv2.LUT(gray, lut)


def crop_to_ink(gray: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """The box holding 99% of the ink pixels, with a small margin; the page itself when there is none."""
    step = 4
    dark = gray[::step, ::step] < 128
    ys, xs = np.nonzero(dark)
    if len(ys) < 50:
        return gray
    top, bottom = np.percentile(ys, [0.5, 99.5]) * step
    left, right = np.percentile(xs, [0.5, 99.5]) * step
    pad_y, pad_x = margin * gray.shape[0], margin * gray.shape[1]
    top, left = int(max(0, top - pad_y)), int(max(0, left - pad_x))
    bottom, right = int(min(gray.shape[0], bottom + pad_y)), int(min(gray.shape[1], right + pad_x))
    if bottom - top < gray.shape[0] * 0.2 or right - left < gray.shape[1] * 0.2:
        return gray
    return gray[top:bottom, left:right]


def keep_thin_traces(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A min filter as wide as the downscale factor, so a one-pixel trace survives INTER_AREA as ink."""
    factor = min(gray.shape[0] / size[0], gray.shape[1] / size[1])
    k = int(factor)
    return cv2.erode(gray, np.ones((k, k), np.uint8)) if k >= 2 else gray


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

    factor = round(image.shape[1] / WORK_WIDTH)
    if factor >= 2:  # an integer factor keeps INTER_AREA on its fast path
        image = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    gray = brightest_channel(image)
    luminance = to_gray(image) if "deskew" in steps else gray  # the grid, faint in `gray`, anchors the angle
    record("input", gray)
    corners = find_page(gray) if "page" in steps else None
    if corners is not None:
        gray = record("page", warp_page(gray, corners))
        luminance = warp_page(luminance, corners) if luminance is not gray else gray
    if "illumination" in steps:
        gray = record("illumination", flatten_illumination(gray))
    skew = 0.0
    if "deskew" in steps:
        skew = estimate_skew(flatten_illumination(luminance))
        gray = record("deskew", rotate(gray, skew) if abs(skew) >= 0.1 else gray)
    for name, operation in (("creases", flatten_creases), ("grid", suppress_grid), ("crop", crop_to_ink)):
        if name in steps:
            gray = record(name, operation(gray))
    result = letterbox(keep_thin_traces(gray, size), size)
    record("model_input", result)
    return Cleaned(image=result, stages=stages, skew_deg=skew, page_found=corners is not None)


def preprocess(image: np.ndarray, size: tuple[int, int], steps: tuple[str, ...] = STEPS) -> np.ndarray:
    """Page pixels -> the model's (height, width) uint8 grayscale input."""
    return clean(image, size, steps).image


@dataclass(frozen=True)
class Preparation:
    """How intake turns a decoded page into stored images; picklable, so the decoder process can apply it."""

    size: tuple[int, int]
    steps: tuple[str, ...] = STEPS
    thumbnail_width: int = THUMBNAIL_WIDTH

    def __call__(self, page: Page) -> PreparedPage:
        scale = self.thumbnail_width / page.image.shape[1]
        thumbnail = cv2.resize(page.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return PreparedPage(preprocess(page.image, self.size, self.steps), thumbnail, page.page_no, page.source,
                            page.metadata)
