"""Paper ECG pages from synthetic records: random print style, then scan and photo artifacts.

Every artifact takes a strength in [0, 1]; the presets `none`, `light` and `heavy` decide which ones
apply and how strongly. The random stream for style and artifacts is derived from the page seed apart
from the signal's, and never reads the labels, so nothing in the picture can hint at the finding
except the traces themselves. Header "machine measurements" are invented independently for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ingest.render import GRID_COLOURS, PaperStyle, render_paper
from model_training.synth.signals import Record

ARTIFACT_LEVELS = ("none", "light", "heavy", "photo")
_PEN_COLOURS = [(20, 20, 20), (40, 30, 30), (90, 30, 20), (30, 30, 90), (60, 60, 60)]  # BGR


@dataclass(frozen=True)
class PageStyle:
    """What was drawn, for labels.csv: nothing here depends on the diagnosis."""

    layout: str
    grid: str
    paper: str
    dpi: int
    artifacts: tuple[str, ...]


_HEADER_EXTRAS = (
    "Unconfirmed report", "Referred by: Dr {name}", "Location: Ward {n}", "Filter 0.05-150 Hz  50 Hz",
    "Device MAC-{n}  v{n}.{n}", "Room {n}  Bed {n}", "Technician: {name}", "Order {n}{n}{n}",
    "Confirmed by {name} on {n}/{n}", "Medications: see chart", "Height {n} cm  Weight {n} kg",
)
_NAMES = ("Smith", "Patel", "Okafor", "Nguyen", "Garcia", "Muller", "Rossi", "Kowalski", "Haddad", "Larsen")


def _header(rng: np.random.Generator) -> tuple[str, ...]:
    """Patient and "machine measurement" lines, invented apart from the record so they say nothing of it."""
    sex = rng.choice(["M", "F"])
    lines = [
        f"ID SYN-{rng.integers(10**6, 10**7)}   {rng.integers(18, 95)} y  {sex}   "
        f"{rng.integers(1, 29):02d}-{rng.integers(1, 13):02d}-20{rng.integers(10, 26)}",
        f"Vent rate {rng.integers(45, 140)} bpm   PR {rng.integers(110, 240)} ms   QRS {rng.integers(70, 150)} ms   "
        f"QT/QTc {rng.integers(320, 480)}/{rng.integers(360, 500)} ms   Axes {rng.integers(-60, 120)}",
    ]
    for extra in rng.choice(len(_HEADER_EXTRAS), size=int(rng.integers(0, 6)), replace=False):
        text = _HEADER_EXTRAS[int(extra)]
        while "{n}" in text:
            text = text.replace("{n}", str(rng.integers(1, 99)), 1)
        lines.append(text.replace("{name}", str(rng.choice(_NAMES))))
    return tuple(lines)


def random_style(rng: np.random.Generator, dpi: int | None = None) -> tuple[PaperStyle, PageStyle]:
    """Layout, rhythm strips, grid, pen, margins and header block, all drawn from `rng` alone."""
    layout = str(rng.choice(["3x4", "6x2", "12x1", "2x6"], p=[0.6, 0.17, 0.13, 0.1]))
    rhythm = [("II",), ("II", "V1", "V5"), ("V1",), ()][int(rng.choice(4, p=[0.55, 0.2, 0.1, 0.15]))]
    grid = str(rng.choice(list(GRID_COLOURS), p=[0.24, 0.16, 0.07, 0.07, 0.08, 0.1, 0.06, 0.08, 0.14]))
    paper = str(rng.choice(["a4", "letter"]))
    dpi = dpi or int(rng.choice([100, 150, 200, 250, 300], p=[0.15, 0.2, 0.35, 0.15, 0.15]))
    header = _header(rng) if rng.random() < 0.85 else ()
    header_scale = float(rng.uniform(0.6, 1.5))
    header_mm = 3.0 + len(header) * 6.0 * header_scale / 0.9
    top = header_mm + float(rng.exponential(6.0)) if header else float(rng.uniform(4, 25))
    side = float(rng.uniform(4, 22))
    style = PaperStyle.named(grid, paper, layout=layout, dpi=dpi, trace_mm=float(rng.uniform(0.1, 0.7)),
                             trace_bgr=_PEN_COLOURS[int(rng.integers(len(_PEN_COLOURS)))],
                             header=header, header_scale=header_scale,
                             header_left_mm=float(rng.uniform(5, 60)) if rng.random() < 0.3 else side,
                             rhythm_leads=rhythm, margins_mm=(side, min(top, 80.0), side, float(rng.uniform(3, 15))),
                             grid_weight=int(rng.choice([1, 2], p=[0.75, 0.25])))
    return style, PageStyle(layout, grid, paper, dpi, ())


# Each artifact: (image BGR uint8, strength 0..1, rng) -> image.
def shadow(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h:8, 0:w:8].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.2, 0.7) * max(h, w)
    blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2)))
    field = 1 - s * 0.55 * (0.6 * (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6) + 0.4 * blob)
    tint = (rng.uniform(0.9, 1.0), rng.uniform(0.95, 1.0), 1.0)
    small = cv2.merge([(field * t).astype(np.float32) for t in tint])
    field3 = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.convertScaleAbs(cv2.multiply(image.astype(np.float32), field3))


def crease(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):
        vertical = rng.random() < 0.5
        pos = rng.uniform(0.15, 0.85) * (w if vertical else h)
        coord = np.arange(w if vertical else h, dtype=np.float32)
        width = rng.uniform(2, 8) * (1 + s)
        profile = 1 - s * 0.35 * np.exp(-0.5 * ((coord - pos) / width) ** 2) \
            + s * 0.12 * np.exp(-0.5 * ((coord - pos - 2.5 * width) / (2 * width)) ** 2)
        out *= profile[None, :, None] if vertical else profile[:, None, None]
    return cv2.convertScaleAbs(out)


def perspective(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """Rotation plus a four-corner warp, as a phone photo of a page on a desk looks."""
    h, w = image.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-1, 1, (4, 2)) * s * 0.05 * np.float32([w, h])
    angle = np.deg2rad(rng.uniform(-8, 8) * s)
    centre = np.float32([w / 2, h / 2])
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = ((src - centre) @ rot.T + centre + jitter).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    desk = tuple(int(v) for v in rng.integers(40, 200, 3))
    return cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=desk)


def blur(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    sigma = 0.3 + 1.4 * s * rng.uniform(0.5, 1.0)
    return cv2.GaussianBlur(image, (0, 0), sigma)


def scanner_noise(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    cv2.setRNGSeed(int(rng.integers(2**31)))  # OpenCV's fast generator, seeded from ours: still deterministic
    noise = np.empty(image.shape[:2], np.int16)
    cv2.randn(noise, 0, 3 + 12 * s)
    return cv2.add(image.astype(np.int16), cv2.merge([noise] * 3), dtype=cv2.CV_8U)


def jpeg(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    quality = int(92 - 70 * s * rng.uniform(0.6, 1.0))
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else image


def low_contrast(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    keep, floor = 1 - 0.55 * s, rng.uniform(0, 40) * s
    lut = np.clip(255 - (255 - np.arange(256, dtype=np.float32)) * keep - floor, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


def binarise(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """Fax-like: one bit per pixel, with the grid mostly gone or mostly black depending on the threshold."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    threshold = int(rng.uniform(140, 215))
    binary = np.where(gray < threshold, 0, 255).astype(np.uint8)
    return cv2.cvtColor(binary, cv2.COLOR_GRAY2BGR)


def stains(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    overlay = image.copy()
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(0.03, 0.12) * w), int(rng.uniform(0.03, 0.12) * h))
        colour = (int(rng.uniform(60, 140)), int(rng.uniform(110, 170)), int(rng.uniform(150, 210)))
        cv2.ellipse(overlay, centre, axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)
    alpha = 0.15 + 0.3 * s
    return cv2.addWeighted(overlay, alpha, image, 1 - alpha, 0)


def scribbles(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    out = image.copy()
    ink = [(140, 40, 20), (20, 20, 20), (30, 30, 160)][int(rng.integers(3))]
    for _ in range(int(1 + 4 * s)):
        start = rng.uniform([0, 0], [w, h])
        steps = np.cumsum(rng.normal(0, 0.01 * w, (int(rng.integers(15, 60)), 2)), axis=0) + start
        cv2.polylines(out, [steps.astype(np.int32)], False, ink, max(1, int(w / 800)), cv2.LINE_AA)
    return out


def partial_crop(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    top, bottom, left, right = (int(rng.uniform(0, 0.08 * s) * d) for d in (h, h, w, w))
    return image[top : h - bottom, left : w - right].copy()


def crumple(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """Crumpled paper: folds at random angles make flat facets, each lit from one side (light and shadow)."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h:8, 0:w:8].astype(np.float32)
    gx, gy = np.zeros_like(xx), np.zeros_like(yy)
    for _ in range(int(rng.integers(6, 30))):
        angle = rng.uniform(0, np.pi)
        nx, ny = np.cos(angle), np.sin(angle)
        offset = nx * rng.uniform(0, w) + ny * rng.uniform(0, h)
        side = np.sign(nx * xx + ny * yy - offset)
        slope = rng.uniform(0.2, 1.0)
        gx += slope * side * nx  # the gradient of slope * |distance to the fold line|
        gy += slope * side * ny
    light = rng.uniform(0, 2 * np.pi)
    shade = (np.cos(light) * gx + np.sin(light) * gy) / (np.abs(gx).max() + np.abs(gy).max() + 1e-6)
    shade = cv2.GaussianBlur(shade, (0, 0), 0.8)
    field = np.clip(1 + s * 0.35 * shade, 0.4, 1.15)
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.convertScaleAbs(image.astype(np.float32) * field[:, :, None])


def wrinkle(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """Wrinkled paper: fibre texture plus many short creases at any angle, each a light ridge beside a dark
    valley, crossing traces wherever they fall (what a page that was balled up and flattened looks like)."""
    h, w = image.shape[:2]
    step = 4
    yy, xx = np.mgrid[0:h:step, 0:w:step].astype(np.float32)
    field = np.zeros_like(xx)
    for _ in range(int(rng.integers(10, 45))):
        angle = rng.uniform(0, np.pi)
        nx, ny = np.cos(angle), np.sin(angle)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        across = (nx * (xx - cx) + ny * (yy - cy)) / (rng.uniform(1.5, 6.0) * w / 1000 * 4)
        along = (-ny * (xx - cx) + nx * (yy - cy)) / (rng.uniform(0.1, 0.6) * max(h, w))
        field += rng.uniform(0.3, 1.0) * across * np.exp(-across**2 - along**2)  # light on one side, dark the other
    grain = cv2.GaussianBlur(rng.standard_normal(xx.shape).astype(np.float32), (0, 0), 1.5)
    blotch = cv2.GaussianBlur(rng.standard_normal(xx.shape).astype(np.float32), (0, 0), 12.0)
    field = 0.22 * field + 0.5 * grain / (grain.std() + 1e-6) * 0.06 + blotch / (blotch.std() + 1e-6) * 0.05
    field = np.clip(1 + s * field, 0.45, 1.2)
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.convertScaleAbs(image.astype(np.float32) * field[:, :, None])


def stamp(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """A rubber stamp (box or ring with words) in a coloured ink, at an angle, over whatever is there."""
    h, w = image.shape[:2]
    unit = w / 300  # about a millimetre on a landscape page
    words = str(rng.choice(["RECEIVED", "COPY", "REVIEWED", "SCANNED", "URGENT", "FILED"]))
    ink = [(160, 60, 30), (40, 40, 170), (130, 40, 120), (60, 110, 40)][int(rng.integers(4))]
    font_scale = unit * rng.uniform(0.25, 0.45)
    thickness = max(1, round(unit * 0.6))
    (tw, th), _ = cv2.getTextSize(words, cv2.FONT_HERSHEY_DUPLEX, font_scale, thickness)
    size = int(max(tw, th) * 1.4) + 4
    layer = np.zeros((size, size), np.uint8)
    centre = (size // 2, size // 2)
    if rng.random() < 0.5:
        cv2.rectangle(layer, (centre[0] - tw // 2 - 6, centre[1] - th - 6), (centre[0] + tw // 2 + 6, centre[1] + 8),
                      255, thickness)
    else:
        cv2.circle(layer, centre, size // 2 - 2, 255, thickness)
    cv2.putText(layer, words, (centre[0] - tw // 2, centre[1]), cv2.FONT_HERSHEY_DUPLEX, font_scale, 255, thickness)
    rotation = cv2.getRotationMatrix2D(centre, rng.uniform(-30, 30), 1.0)
    layer = cv2.warpAffine(layer, rotation, (size, size))
    top, left = int(rng.uniform(0, max(1, h - size))), int(rng.uniform(0, max(1, w - size)))
    region = image[top : top + size, left : left + size].astype(np.float32)
    alpha = (layer[: region.shape[0], : region.shape[1]].astype(np.float32) / 255 * (0.5 + 0.4 * s))[:, :, None]
    out = image.copy()
    out[top : top + size, left : left + size] = (region * (1 - alpha) + np.float32(ink) * alpha).astype(np.uint8)
    return out


def handwriting(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """A reader's notes in a script hand, anywhere on the page, over traces as often as not."""
    h, w = image.shape[:2]
    out = image.copy()
    unit = w / 300
    ink = [(140, 40, 20), (20, 20, 20), (30, 30, 160)][int(rng.integers(3))]
    for _ in range(int(1 + 3 * s)):
        words = " ".join(str(rng.choice(["ok", "seen", "f/u", "?", "cf old", "repeat", "NAD", "ok to d/c", "call"]))
                         for _ in range(int(rng.integers(1, 4))))
        origin = (int(rng.uniform(0, 0.8 * w)), int(rng.uniform(0.05 * h, h)))
        cv2.putText(out, words, origin, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, unit * rng.uniform(0.3, 0.6), ink,
                    max(1, round(unit * 0.4)), cv2.LINE_AA)
    return out


ARTIFACTS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "shadow": shadow, "crease": crease, "crumple": crumple, "wrinkle": wrinkle, "stains": stains, "stamp": stamp,
    "scribbles": scribbles,
    "handwriting": handwriting, "low_contrast": low_contrast,
    "perspective": perspective, "partial_crop": partial_crop, "blur": blur, "binarise": binarise,
    "scanner_noise": scanner_noise, "jpeg": jpeg,
}
_PROBABILITY = {  # per preset: chance each artifact applies, and the strength range
    "light": ({"binarise": 0.0, "partial_crop": 0.1, "scribbles": 0.1, "stains": 0.1, "crumple": 0.1, "wrinkle": 0.1,
               "stamp": 0.1, "handwriting": 0.1}, 0.35, (0.05, 0.4)),
    "heavy": ({"binarise": 0.12, "partial_crop": 0.35, "scribbles": 0.3, "stains": 0.35, "crumple": 0.35,
               "wrinkle": 0.45, "stamp": 0.25, "handwriting": 0.3}, 0.7, (0.3, 1.0)),
    # A phone photo of a printout on a desk: always shadowed, warped, dim, soft and recompressed.
    # Stage 1 never trains on it, so it stands for a hospital's own, unseen style (the two-stage ablation).
    "photo": ({"shadow": 1.0, "perspective": 1.0, "low_contrast": 1.0, "blur": 1.0, "jpeg": 1.0, "binarise": 0.0,
               "scanner_noise": 0.0, "crumple": 0.0, "wrinkle": 0.0, "stamp": 0.0, "handwriting": 0.0},
              0.25, (0.6, 1.0)),
}


def apply_artifacts(image: np.ndarray, level: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
    """Apply a preset's artifacts in physical order (paper, then camera, then sensor and encoding).

    A fax-binarised page came through a scanner, so it gets no photo artifacts (desk, shadow, warp).
    """
    if level not in ARTIFACT_LEVELS:
        raise ValueError(f"artifact level must be one of {ARTIFACT_LEVELS}")
    if level == "none":
        return image, ()
    special, default_p, (low, high) = _PROBABILITY[level]
    # `wrinkle` came later: a level that never wrinkles skips its draw and keeps the pages it made before
    chosen = {name for name in ARTIFACTS if not (name == "wrinkle" and special.get(name, default_p) == 0)
              and rng.random() < special.get(name, default_p)}
    if "binarise" in chosen:
        chosen -= {"shadow", "perspective", "low_contrast"}
    applied = []
    for name, artifact in ARTIFACTS.items():
        if name in chosen:
            image = artifact(image, float(rng.uniform(low, high)), rng)
            applied.append(name)
    return image, tuple(applied)


PAGE_STREAM = 0x9A9E5  # a page's random stream: [page_seed, PAGE_STREAM]


def render_page(record: Record, page_seed: int, artifacts: str = "heavy", dpi: int | None = None
                ) -> tuple[np.ndarray, PageStyle]:
    """A printed-and-scanned page of `record`; `page_seed` drives everything visual and nothing else."""
    rng = np.random.default_rng([page_seed, PAGE_STREAM])
    style, page = random_style(rng, dpi)
    image = render_paper(record.signals, record.fs, record.leads, style)
    image, applied = apply_artifacts(image, artifacts, rng)
    return image, PageStyle(page.layout, page.grid, page.paper, page.dpi, applied)
