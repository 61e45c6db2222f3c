"""How well and how fast `ingest.preprocess` cleans pages whose distortions are known exactly.

Synthetic pages are drawn clean, then given one distortion with a known value (a rotation, a
shadow), so the cleaning can be scored against the truth rather than by eye.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from ingest.preprocess import WORK_WIDTH, brightest_channel, clean, flatten_illumination
from model_training.synth.families import render_family
from model_training.synth.paper import ARTIFACTS, render_page
from model_training.synth.signals import generate_record

SEED_BASE = 7_700_000  # records and page styles of this benchmark, apart from any training set


def _clean_page(index: int, dpi: int = 200) -> np.ndarray:
    image, _ = render_page(generate_record(SEED_BASE + index), SEED_BASE + index, "none", dpi=dpi)
    return image


def deskew_errors(n: int = 200, max_deg: float = 8.0) -> dict:
    """Rotate clean pages (with scanner noise and JPEG) by a known angle; compare the angle recovered."""
    errors = []
    for i in range(n):
        rng = np.random.default_rng([SEED_BASE, i])
        page = ARTIFACTS["jpeg"](ARTIFACTS["scanner_noise"](_clean_page(i), 0.5, rng), 0.5, rng)
        angle = float(rng.uniform(-max_deg, max_deg))
        centre = (page.shape[1] / 2, page.shape[0] / 2)
        skewed = cv2.warpAffine(page, cv2.getRotationMatrix2D(centre, angle, 1.0), page.shape[1::-1],
                                flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
        result = clean(skewed, (384, 768), steps=("illumination", "deskew"))
        errors.append(abs(result.skew_deg + angle))
    errors_arr = np.array(errors)
    return {"pages": n, "max_rotation_deg": max_deg, "mean_error_deg": round(float(errors_arr.mean()), 3),
            "p95_error_deg": round(float(np.percentile(errors_arr, 95)), 3),
            "max_error_deg": round(float(errors_arr.max()), 3),
            "share_under_0_5_deg": round(float((errors_arr < 0.5).mean()), 3)}


def paper_unevenness(gray: np.ndarray, tiles: int = 12) -> float:
    """Spread of the paper's brightness over a tiles x tiles grid (90th percentile per tile), 0..1."""
    h, w = gray.shape
    levels = [np.percentile(gray[r * h // tiles:(r + 1) * h // tiles, c * w // tiles:(c + 1) * w // tiles], 90)
              for r in range(tiles) for c in range(tiles)]
    return float((np.percentile(levels, 95) - np.percentile(levels, 5)) / 255)


def flatness(n: int = 50) -> dict:
    """Paper unevenness of strongly shadowed pages before and after illumination correction."""
    before, after = [], []
    for i in range(n):
        rng = np.random.default_rng([SEED_BASE, 10_000 + i])
        shadowed = brightest_channel(ARTIFACTS["shadow"](_clean_page(1000 + i), 1.0, rng))
        small = cv2.resize(shadowed, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        before.append(paper_unevenness(small))
        after.append(paper_unevenness(flatten_illumination(small)))
    return {"pages": n, "unevenness_before": round(float(np.mean(before)), 3),
            "unevenness_after": round(float(np.mean(after)), 3)}


def timing(n: int = 40, size: tuple[int, int] = (384, 768)) -> dict:
    """Milliseconds per 200-DPI page (heavy artifacts) on one core, all steps."""
    pages = [render_page(generate_record(SEED_BASE + 20_000 + i), SEED_BASE + 20_000 + i, "heavy", dpi=200)[0]
             for i in range(n)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        clean(pages[0], size)
        started = time.perf_counter()
        for page in pages:
            clean(page, size)
        seconds = time.perf_counter() - started
    finally:
        cv2.setNumThreads(threads)
    return {"pages": n, "ms_per_page": round(1000 * seconds / n, 1), "input_size": list(size),
            "page_pixels": f"{pages[0].shape[1]}x{pages[0].shape[0]}", "threads": 1}


def scale_errors(n: int = 200, family: str = "ours", artifacts: str = "heavy") -> dict:
    """Measured px/mm against the truth (the page's DPI over the working downscale), and where it came from.

    Pages are drawn at random DPI (100-300); a phone-photo warp changes the true scale by a few per
    cent, which counts as error here.
    """
    errors, sources, found = [], {"grid": 0, "trace_width": 0, "none": 0}, 0
    for i in range(n):
        seed = SEED_BASE + 30_000 + i
        page, style = render_family(generate_record(seed), seed, family, artifacts)
        result = clean(page, (256, 352))
        truth = style.dpi / 25.4 / max(1, round(page.shape[1] / WORK_WIDTH))
        errors.append(abs(result.px_per_mm / truth - 1) if result.px_per_mm else np.inf)
        sources[result.scale_source] += 1
        found += result.trace_area_found
    errors_arr = np.array(errors)
    measured = errors_arr[np.isfinite(errors_arr)]
    return {"pages": n, "family": family, "artifacts": artifacts, "trace_area_found": round(found / n, 3),
            "scale_from": {k: round(v / n, 3) for k, v in sources.items()},
            "share_under_3pct": round(float((errors_arr < 0.03).mean()), 3),
            "share_under_10pct": round(float((errors_arr < 0.10).mean()), 3),
            "median_error": round(float(np.median(measured)), 4) if measured.size else None,
            "p95_error": round(float(np.percentile(measured, 95)), 4) if measured.size else None}


PAPER_DAMAGE = ("crease", "crumple", "wrinkle")


def _ink(cleaned: np.ndarray) -> np.ndarray:
    return cleaned < 128


def _near(mask: np.ndarray) -> np.ndarray:
    """Within one pixel: a 0.05 degree turn from deskewing a creased page moves a thin trace by that much."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def paper_survival(n: int = 40, strength: float = 1.0) -> dict:
    """What cleaning leaves of crumpled, creased and wrinkled paper: the same page cleaned with and without it.

    Each page is drawn clean at 200 DPI, then once more with one kind of paper damage at `strength`
    (and all three together). Scores compare the two cleaned inputs: the share of the clean page's ink
    that is still ink within a pixel (recall), the share of the damaged page's ink within a pixel of
    the clean page's (precision: 1 - spurious marks), the mean absolute difference in grey levels, and
    the share of pages whose measured millimetre stayed within 1% (a changed scale redraws the whole page).
    """
    rows: dict[str, dict[str, list[float]]] = {name: {"recall": [], "precision": [], "mad": [], "same_scale": []}
                                                for name in (*PAPER_DAMAGE, "all")}
    for i in range(n):
        page = _clean_page(40_000 + i)
        before = clean(page, (256, 352))
        reference = before.image
        ref_ink = _ink(reference)
        for name in rows:
            rng = np.random.default_rng([SEED_BASE, 40_000 + i])
            damaged = page
            for artifact in (PAPER_DAMAGE if name == "all" else (name,)):
                damaged = ARTIFACTS[artifact](damaged, strength, rng)
            after = clean(damaged, (256, 352))
            cleaned, ink = after.image, _ink(after.image)
            rows[name]["same_scale"].append(float(bool(before.px_per_mm and after.px_per_mm)
                                                  and abs(after.px_per_mm / before.px_per_mm - 1) < 0.01))
            rows[name]["recall"].append(float((_near(ink) & ref_ink).sum() / max(1, ref_ink.sum())))
            rows[name]["precision"].append(float((ink & _near(ref_ink)).sum() / max(1, ink.sum())))
            rows[name]["mad"].append(float(np.abs(cleaned.astype(np.int16) - reference).mean()))
    return {"pages": n, "strength": strength, "dpi": 200,
            **{name: {k: round(float(np.mean(v)), 3) for k, v in scores.items()} for name, scores in rows.items()}}


def bench_preprocess(n_deskew: int = 200, n_flat: int = 50, n_time: int = 40, n_scale: int = 200,
                     n_paper: int = 40) -> dict:
    speed = timing(n_time)
    scale = {f"{family}_{level}": scale_errors(n_scale, family, level)
             for family in ("ours", "ecgplot") for level in ("none", "heavy")}
    return {"benchmark": "preprocess", "ms_per_page": speed["ms_per_page"], "timing": speed,
            "deskew": deskew_errors(n_deskew), "flatness": flatness(n_flat), "scale": scale,
            "paper_damage": paper_survival(n_paper),
            "cpu_count": os.cpu_count()}
