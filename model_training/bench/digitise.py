"""How well the classical digitiser reads our own pages back: SNR per lead and per layout against the true
signal, on clean pages and on pages given heavy photometric damage (shadow, creases, stains, stamps,
handwriting, low contrast, blur, sensor noise, JPEG) that leaves the geometry intact.

Two readings of each page: `known`, with the geometry the renderer drew by (an upper bound for the
threshold-and-centroid reading itself), and `found`, the whole path `ecg-intake digitise` takes (cleaned as
intake cleans, layout found on the page, leads read at the working resolution), with the share of pages whose
layout was found right.
"""

from __future__ import annotations

import time

import numpy as np

from ingest.render import paper_geometry, render_paper
from model_training.digitise.classical import FS, digitise_known
from model_training.digitise.page import digitise_image
from model_training.digitise.score import snr_per_lead
from model_training.synth.paper import ARTIFACTS, random_style
from model_training.synth.signals import generate_record

SEED_BASE = 8_800_000  # records and page styles of this benchmark, apart from any training set
PHOTOMETRIC = ("shadow", "crease", "stains", "stamp", "handwriting", "low_contrast", "blur", "scanner_noise",
               "jpeg")
CONDITIONS = ("clean", "photometric")
METHODS = ("known", "found")


def damaged(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each photometric artifact with probability 0.7 at strength 0.3-1.0, in `ARTIFACTS`' physical order."""
    for name in ARTIFACTS:
        if name in PHOTOMETRIC and rng.random() < 0.7:
            image = ARTIFACTS[name](image, float(rng.uniform(0.3, 1.0)), rng)
    return image


def _summary(values: list[float]) -> dict[str, float]:
    finite = np.array([v for v in values if np.isfinite(v)] or [np.nan])
    return {"median_db": round(float(np.median(finite)), 2), "p10_db": round(float(np.percentile(finite, 10)), 2),
            "share_at_least_12_db": round(float(np.mean(finite >= 12)), 3), "leads": len(values)}


def digitise_bench(n: int = 40, dpi: int = 200) -> dict:
    """`n` records, each drawn in a random style of our renderer (layout, rhythm strips, grid, pen, margins), read
    back clean and damaged, with the geometry known and with it found."""
    snrs: dict[str, dict[str, dict[str, list[float]]]] = {m: {c: {} for c in CONDITIONS} for m in METHODS}
    by_layout: dict[str, dict[str, dict[str, list[float]]]] = {m: {c: {} for c in CONDITIONS} for m in METHODS}
    found_right: dict[str, list[bool]] = {c: [] for c in CONDITIONS}
    read: list[float] = []
    seconds = dict.fromkeys(METHODS, 0.0)
    for index in range(n):
        record = generate_record(SEED_BASE + index)
        if record.fs != FS:
            raise ValueError(f"the generator's records are sampled at {record.fs} Hz, the digitiser writes {FS}")
        rng = np.random.default_rng([SEED_BASE + index, 0xD161])
        style, _ = random_style(rng, dpi)
        geometry = paper_geometry(style, record.fs, record.leads)
        clean = render_paper(record.signals, record.fs, record.leads, style)
        for condition, image in (("clean", clean), ("photometric", damaged(clean.copy(), rng))):
            for method in METHODS:
                started = time.perf_counter()
                if method == "known":
                    reading = digitise_known(image, geometry, dpi / 25.4, record.fs, record.leads)
                    read.extend(reading.read.values())
                else:
                    page = digitise_image(image)
                    reading = page.digitised
                    found_right[condition].append(page.layout.name == style.layout)
                seconds[method] += time.perf_counter() - started
                for lead, snr in snr_per_lead(record.signals, reading.signals, FS, reading.leads).items():
                    snrs[method][condition].setdefault(lead, []).append(snr)
                    by_layout[method][condition].setdefault(style.layout, []).append(snr)
    pages = n * len(CONDITIONS)
    return {
        "benchmark": "digitise", "method": "classical (threshold, column centroid)", "family": "ours",
        "records": n, "dpi": dpi,
        "seconds_per_page": {m: round(seconds[m] / pages, 3) for m in METHODS},
        "known_lead_time_read_share": round(float(np.mean(read)), 4),
        "layout_found": {c: round(float(np.mean(found_right[c])), 3) for c in CONDITIONS},
        **{m: {"overall": {c: _summary([v for vs in snrs[m][c].values() for v in vs]) for c in CONDITIONS},
               "per_layout": {c: {lay: _summary(vs) for lay, vs in sorted(by_layout[m][c].items())}
                              for c in CONDITIONS},
               "per_lead": {c: {lead: _summary(vs) for lead, vs in snrs[m][c].items()} for c in CONDITIONS}}
           for m in METHODS},
    }
