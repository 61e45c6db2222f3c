"""`ecg-intake bench engine`: images/s of every inference backend that runs here, per batch size.

Returns a plain dict for the command to print and write as JSON; `bench pipeline` measures its
best CPU engine with it in the same run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


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
    from model_training.manifest import load_manifest
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
