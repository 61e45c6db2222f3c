"""Benchmarks that need the worker's parts (decoders, preprocessing, engine) in one process.

Each returns a plain dict for `ecg-intake bench ...` to print and write as JSON; figures that are
compared are measured in the same run, so their ratio holds on a busy machine too.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ingest.decode import DecodeLimits, decode
from ingest.preprocess import preprocess

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
    from model_training.bundle import load_manifest
    from model_training.synth.dataset import write_dataset

    input_size = tuple(load_manifest(bundle_dir).input_size)
    limits = DecodeLimits(pdf_dpi=dpi)
    model = model_images_per_second(bundle_dir)  # first, on a quiet process
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_dataset(folder, n, kinds, "light", seed=990, dpi=dpi)
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


def _images_per_second(engine, pages: np.ndarray, batch_size: int, min_seconds: float, min_batches: int) -> float:
    batch = pages[:batch_size]
    engine.predict(batch)  # warm-up: allocations, lazy initialisation
    done, started = 0, time.perf_counter()
    while done < min_batches * batch_size or time.perf_counter() - started < min_seconds:
        engine.predict(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


def bench_engine(bundle_dir: Path, batch_sizes: tuple[int, ...] = (1, 8, 32), threads: int = 0,
                 min_seconds: float = 3.0, min_batches: int = 3, cache_dir: Path | None = None) -> dict:
    """Images/s of every backend that runs here, per batch size, on one bundle; unavailable ones with the reason.

    On a GPU the cuda backend is also measured in fp32 eager mode, the baseline fp16 is compared with.
    """
    from model_training.bundle import load_manifest
    from worker.engine import AUTO_ORDER, build_engine, unavailable

    manifest = load_manifest(bundle_dir)
    pages = np.random.default_rng(0).integers(0, 256, (max(batch_sizes), *manifest.input_size), dtype=np.uint8)
    rows, skipped = [], {}
    for kind in AUTO_ORDER:
        reason = unavailable(kind)
        if reason:
            skipped[kind] = reason
            continue
        variants = [kind, "cuda-fp32"] if kind == "cuda" else [kind]
        for variant in variants:
            for batch_size in batch_sizes:
                if variant == "cuda-fp32":
                    from worker.engine.cuda import CudaEngine

                    engine = CudaEngine(bundle_dir, batch_size=batch_size, half=False)
                else:
                    engine = build_engine(kind, bundle_dir, threads, batch_size, cache_dir)
                rate = _images_per_second(engine, pages, batch_size, min_seconds, min_batches)
                rows.append({"engine": variant, "batch_size": batch_size, "images_per_s": round(rate, 2)})
                del engine
    cpu_rows = [r for r in rows if r["engine"] in ("cpu", "onnx")]
    best_cpu = max(cpu_rows, key=lambda r: r["images_per_s"])
    device = "cpu"
    if "cuda" not in skipped:
        import torch

        device = torch.cuda.get_device_name(0)
    return {"benchmark": "engine", "bundle": manifest.model_version, "backbone": manifest.backbone,
            "input_size": list(manifest.input_size), "trained": manifest.trained, "cpu_count": os.cpu_count(),
            "threads": threads or "torch default", "device": device, "rows": rows, "skipped": skipped,
            "best_cpu": best_cpu}
