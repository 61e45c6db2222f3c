"""How well the classical digitiser reads our own pages back: SNR per lead and per layout against the true
signal, on clean pages and on pages given heavy photometric damage (shadow, creases, stains, stamps,
handwriting, low contrast, blur, sensor noise, JPEG) that leaves the geometry intact.

Two readings of each page: `known`, with the geometry the renderer drew by (an upper bound for the
threshold-and-centroid reading itself), and `found`, the whole path `ecg-intake digitise` takes (cleaned as
intake cleans, layout found on the page, leads read at the working resolution), with the share of pages whose
layout was found right.

Then `found` on every drawing family (ours, ecg_plot, dicom-ecg-plot, wfdb's plotter), clean and with the
training set's heavy artifacts (warps and crops included): pages drawn by code we did not write.
"""

from __future__ import annotations

import time

import numpy as np

from ingest.render import paper_geometry, render_paper
from model_training.digitise.classical import FS, digitise_known
from model_training.digitise.page import digitise_image
from model_training.digitise.score import snr_per_lead
from model_training.synth.families import FAMILIES, render_family
from model_training.synth.paper import ARTIFACTS, random_style
from model_training.synth.signals import generate_record

SEED_BASE = 8_800_000  # records and page styles of this benchmark, apart from any training set
PHOTOMETRIC = ("shadow", "crease", "stains", "stamp", "handwriting", "low_contrast", "blur", "scanner_noise",
               "jpeg")
CONDITIONS = ("clean", "photometric")
FAMILY_ARTIFACTS = ("none", "heavy")
# Each family's own layout names as ours; None: no standard layout (then only whether one was claimed is scored).
LAYOUT_NAMES = {"ecgplot-12lead+rhythm": "3x4", "ecgplot-12lead": "3x4", "ecgplot-columns": "6x2",
                "ecgplot-limb-chest": None, "dicomplot-3x4_1": "3x4", "dicomplot-3x4": "3x4",
                "dicomplot-6x2": "6x2", "dicomplot-12x1": "12x1", "wfdbplot-12x1": "12x1"}
METHODS = ("known", "found")


def damaged(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each photometric artifact with probability 0.7 at strength 0.3-1.0, in `ARTIFACTS`' physical order."""
    for name in ARTIFACTS:
        if name in PHOTOMETRIC and rng.random() < 0.7:
            image = ARTIFACTS[name](image, float(rng.uniform(0.3, 1.0)), rng)
    return image


def _summary(values: list[float]) -> dict[str, float]:
    """A lead left unread scores 0 dB, as an empty lead scored in the challenge (its noise is the signal)."""
    scored = np.nan_to_num(np.array(values or [np.nan], dtype=float), nan=0.0, posinf=99.0)
    return {"median_db": round(float(np.median(scored)), 2), "p10_db": round(float(np.percentile(scored, 10)), 2),
            "share_at_least_12_db": round(float(np.mean(scored >= 12)), 3), "leads": len(values),
            "unread": int(np.isnan(np.array(values, dtype=float)).sum())}


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


def family_bench(n: int = 20, dpi: int = 200, families: tuple[str, ...] = FAMILIES) -> dict:
    """`found` on `n` pages of each family, clean and heavily damaged: SNR, layouts claimed and found right."""
    result: dict[str, dict] = {}
    for family in families:
        result[family] = {}
        for artifacts in FAMILY_ARTIFACTS:
            snrs: list[float] = []
            claimed: list[bool] = []
            right: list[bool] = []
            for index in range(n):
                record = generate_record(SEED_BASE + 10_000 + index)
                image, style = render_family(record, SEED_BASE + 10_000 + index, family, artifacts, dpi)
                reading = digitise_image(image)
                expected = style.layout if family == "ours" else LAYOUT_NAMES.get(style.layout)
                claimed.append(reading.layout.name is not None)
                if expected is not None:
                    right.append(reading.layout.name == expected)
                snrs.extend(snr_per_lead(record.signals, reading.digitised.signals, FS,
                                         reading.digitised.leads).values())
            result[family][artifacts] = {**_summary(snrs), "layout_claimed": round(float(np.mean(claimed)), 3),
                                         "layout_right": round(float(np.mean(right)), 3) if right else None}
    return result
