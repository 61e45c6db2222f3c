"""How well pages are read back: SNR per lead and per layout against the true signal, as the PhysioNet/CinC 2024
challenge scored digitisers.

Three readings of our own pages, clean and given heavy photometric damage (shadow, creases, stains, stamps,
handwriting, low contrast, blur, sensor noise, JPEG) that leaves the geometry intact: `known`, the threshold
reading with the geometry the renderer drew by (an upper bound for the threshold-and-centroid reading itself),
and the whole path `ecg-intake digitise` takes (cleaned as intake cleans, layout found on the page) with the
trace told apart by the `classical` threshold or by the `learned` segmenter.

Then both found readings on every drawing family (ours, ecg_plot, dicom-ecg-plot, wfdb's plotter), clean and with
the training set's heavy artifacts (warps and crops included): pages drawn by code we did not write, one family
of them left out of the segmenter's training. `learned+einthoven` is the learned reading with the limb leads
made consistent (`digitise.einthoven`), scored apart so its worth is measured, not assumed.
"""

from __future__ import annotations

import time

import numpy as np

from ingest.render import paper_geometry, render_paper
from model_training.digitise.classical import FS, digitise_known
from model_training.digitise.einthoven import einthoven
from model_training.digitise.page import digitise_image
from model_training.digitise.score import snr_per_lead
from model_training.digitise.segment import shipped_segmenter
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
METHODS = ("known", "classical", "learned")
FOUND = ("classical", "learned", "learned+einthoven")  # the readings of a page whose geometry nobody stated


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


def _found(image: np.ndarray, method: str, segmenter):
    return digitise_image(image, segmenter if method == "learned" else None)


def digitise_bench(n: int = 40, dpi: int = 200) -> dict:
    """`n` records, each drawn in a random style of our renderer (layout, rhythm strips, grid, pen, margins), read
    back clean and damaged, with the geometry known and with it found (classical and learned)."""
    segmenter = _segmenter()
    snrs: dict[str, dict[str, dict[str, list[float]]]] = {m: {c: {} for c in CONDITIONS} for m in METHODS}
    by_layout: dict[str, dict[str, dict[str, list[float]]]] = {m: {c: {} for c in CONDITIONS} for m in METHODS}
    found_right: dict[str, dict[str, list[bool]]] = {m: {c: [] for c in CONDITIONS} for m in METHODS[1:]}
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
                    page = _found(image, method, segmenter)
                    reading = page.digitised
                    found_right[method][condition].append(page.layout.name == style.layout)
                seconds[method] += time.perf_counter() - started
                for lead, snr in snr_per_lead(record.signals, reading.signals, FS, reading.leads).items():
                    snrs[method][condition].setdefault(lead, []).append(snr)
                    by_layout[method][condition].setdefault(style.layout, []).append(snr)
    pages = n * len(CONDITIONS)
    return {
        "benchmark": "digitise", "family": "ours", "records": n, "dpi": dpi,
        "segmenter": segmenter.info,
        "seconds_per_page": {m: round(seconds[m] / pages, 3) for m in METHODS},
        "known_lead_time_read_share": round(float(np.mean(read)), 4),
        "layout_found": {m: {c: round(float(np.mean(found_right[m][c])), 3) for c in CONDITIONS} for m in METHODS[1:]},
        **{m: {"overall": {c: _summary([v for vs in snrs[m][c].values() for v in vs]) for c in CONDITIONS},
               "per_layout": {c: {lay: _summary(vs) for lay, vs in sorted(by_layout[m][c].items())}
                              for c in CONDITIONS},
               "per_lead": {c: {lead: _summary(vs) for lead, vs in snrs[m][c].items()} for c in CONDITIONS}}
           for m in METHODS},
    }


def _segmenter():
    segmenter = shipped_segmenter()
    if segmenter is None:
        raise FileNotFoundError("no trace segmenter in models/digitiser: run `ecg-intake train-digitiser` first")
    return segmenter


def family_bench(n: int = 20, dpi: int = 200, families: tuple[str, ...] = FAMILIES) -> dict:
    """Both found readings on `n` pages of each family, clean and heavily damaged: SNR, layouts claimed and found
    right; the family the segmenter never saw is marked `held_out`."""
    segmenter = _segmenter()
    held_out = segmenter.info.get("held_out_family")
    result: dict[str, dict] = {}
    for family in families:
        result[family] = {"held_out": family == held_out}
        for artifacts in FAMILY_ARTIFACTS:
            snrs: dict[str, list[float]] = {m: [] for m in FOUND}
            claimed: dict[str, list[bool]] = {m: [] for m in FOUND}
            right: dict[str, list[bool]] = {m: [] for m in FOUND}
            for index in range(n):
                record = generate_record(SEED_BASE + 10_000 + index)
                image, style = render_family(record, SEED_BASE + 10_000 + index, family, artifacts, dpi)
                expected = style.layout if family == "ours" else LAYOUT_NAMES.get(style.layout)
                for method in ("classical", "learned"):
                    page = _found(image, method, segmenter)
                    readings = {method: page.digitised}
                    if method == "learned":
                        readings["learned+einthoven"] = einthoven(page.digitised)
                    for name, reading in readings.items():
                        claimed[name].append(page.layout.name is not None)
                        if expected is not None:
                            right[name].append(page.layout.name == expected)
                        snrs[name].extend(snr_per_lead(record.signals, reading.signals, FS, reading.leads).values())
            result[family][artifacts] = {
                m: {**_summary(snrs[m]), "layout_claimed": round(float(np.mean(claimed[m])), 3),
                    "layout_right": round(float(np.mean(right[m])), 3) if right[m] else None}
                for m in FOUND}
    return result
