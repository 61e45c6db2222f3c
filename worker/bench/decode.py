"""`ecg-intake bench decode`: the worker's decoders and preprocessing against the CPU model, in one process.

Returns a plain dict for the command to print and write as JSON; figures that are compared are
measured in the same run, so their ratio holds on a busy machine too.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ingest.decode import DecodeLimits, decode
from ingest.preprocess import preprocess
from worker.bench.inputs import synth_inputs

DECODE_KINDS = {"pdf": ".pdf", "dicom-waveform": "-waveform.dcm", "jpg": ".jpg", "png": ".png", "tiff": ".tiff",
                "dicom-sc": "-sc.dcm", "dicom-pdf": "-pdf.dcm"}


def model_images_per_second(bundle_dir: Path, batch_size: int = 8, batches: int = 4, threads: int = 0) -> float:
    """The CPU engine's throughput on the bundle's input size: the rate decoding has to keep up with."""
    from worker.engine import load_engine

    engine = load_engine(bundle_dir, "cpu", threads=threads, batch_size=batch_size)
    height, width = engine.manifest.input_size
    pages = np.random.default_rng(0).integers(0, 256, (batch_size, height, width), dtype=np.uint8)
    engine.predict(pages)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        engine.predict(pages)
    return batches * batch_size / (time.perf_counter() - started)


def bench_decode(bundle_dir: Path, n: int = 30, dpi: int = 200, kinds: tuple[str, ...] = tuple(DECODE_KINDS)) -> dict:
    """Pages per second per input kind, on one core, decode alone and decode plus preprocessing."""
    from model_training.manifest import load_manifest

    input_size = tuple(load_manifest(bundle_dir).input_size)
    limits = DecodeLimits(pdf_dpi=dpi)
    model = model_images_per_second(bundle_dir)  # first, on a quiet process
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synth_inputs(folder, n, kinds, "light", seed=990, dpi=dpi)
        for kind in kinds:
            files = sorted(p for p in folder.iterdir() if p.name.endswith(DECODE_KINDS[kind]))
            decode(files[0], limits)  # warm-up: imports, poppler in the page cache
            decode_s = prep_s = 0.0
            pages = 0
            for path in files:
                started = time.perf_counter()
                _, decoded = decode(path, limits)
                middle = time.perf_counter()
                for page in decoded:
                    preprocess(page.image, input_size)
                decode_s += middle - started
                prep_s += time.perf_counter() - middle
                pages += len(decoded)
            rows.append({"kind": kind, "files": len(files), "pages": pages,
                         "decode_pages_per_s": round(pages / decode_s, 1),
                         "decode_preprocess_pages_per_s": round(pages / (decode_s + prep_s), 1),
                         "ms_per_page": round(1000 * (decode_s + prep_s) / pages, 1)})
    for row in rows:
        row["ratio_to_model"] = round(row["decode_preprocess_pages_per_s"] / model, 2)
    return {"benchmark": "decode", "dpi": dpi, "input_size": list(input_size), "processes": 1,
            "model_images_per_s": round(model, 1), "model_batch_size": 8, "cpu_count": os.cpu_count(),
            "kinds": rows, "slowest_ratio": min(r["ratio_to_model"] for r in rows)}
