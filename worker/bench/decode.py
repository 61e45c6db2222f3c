"""`ecg-intake bench decode`: the worker's decoders and preprocessing against the CPU model, in one process.

Returns a plain dict for the command to print and write as JSON; figures that are compared are
measured in the same run, so their ratio holds on a busy machine too. Decoding and cleaning are counted
in core time (this process's CPU time plus that of its finished children, as poppler runs as one) with
OpenCV held to one thread, so the figures say what one worker core costs per page, not how busy the host was.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ingest.decode import DecodeLimits, decode
from ingest.preprocess import Preparation
from worker.bench.inputs import synth_inputs

DECODE_KINDS = {"pdf": ".pdf", "dicom-waveform": "-waveform.dcm", "jpg": ".jpg", "png": ".png", "tiff": ".tiff",
                "dicom-sc": "-sc.dcm", "dicom-pdf": "-pdf.dcm",
                "muse": "-muse.xml", "philips": "-philips.xml", "aecg": "-aecg.xml", "scp": "-scp.scp"}
XML_KINDS = ("muse", "philips", "aecg")  # their XML pre-pass cost is printed apart
WAVEFORM_KINDS = ("dicom-waveform", *XML_KINDS, "scp")  # drawn from samples, not decoded from pixels
TIMING = ("core time: time.process_time() plus the CPU time of finished child processes (poppler), "
          "one process, cv2.setNumThreads(1)")
PNG_LEVELS = (0, 1, 3, 6, 9)
WEBP_LOSSLESS = 101  # cv2.IMWRITE_WEBP_QUALITY above 100 means lossless


def core_seconds() -> float:
    """CPU seconds of this process and its waited-for children: pdf2image runs poppler as a child process."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


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


def _ms(seconds: float, pages: int) -> float:
    return round(1000 * seconds / pages, 1)


def _decode_and_clean(files: list[Path], limits: DecodeLimits, preparation: Preparation, working_copy: bool
                      ) -> tuple[float, float, int]:
    """(decode core seconds, clean core seconds, pages) over `files`."""
    decode_s = clean_s = 0.0
    pages = 0
    for path in files:
        started = core_seconds()
        _, decoded = decode(path, limits, working_copy=working_copy)
        middle = core_seconds()
        for page in decoded:
            preparation(page)
        decode_s += middle - started
        clean_s += core_seconds() - middle
        pages += len(decoded)
    return decode_s, clean_s, pages


def _kind_row(kind: str, files: list[Path], limits: DecodeLimits, preparation: Preparation) -> dict[str, Any]:
    for working_copy in (False, True):  # warm-up: imports, poppler in the page cache
        decode(files[0], limits, working_copy=working_copy)
    full_decode, full_clean, pages = _decode_and_clean(files, limits, preparation, working_copy=False)
    work_decode, work_clean, _ = _decode_and_clean(files, limits, preparation, working_copy=True)
    full_total, work_total = full_decode + full_clean, work_decode + work_clean
    return {"kind": kind, "files": len(files), "pages": pages,
            "full_decode_ms": _ms(full_decode, pages), "working_decode_ms": _ms(work_decode, pages),
            "full_clean_ms": _ms(full_clean, pages), "working_clean_ms": _ms(work_clean, pages),
            "full_total_ms": _ms(full_total, pages), "working_total_ms": _ms(work_total, pages),
            "full_pages_per_s": round(pages / full_total, 1), "working_pages_per_s": round(pages / work_total, 1),
            "speedup": round(full_total / work_total, 2),
            # the intake path (working copy), under the names earlier reports used
            "decode_pages_per_s": round(pages / work_decode, 1),
            "decode_preprocess_pages_per_s": round(pages / work_total, 1),
            "ms_per_page": _ms(work_total, pages)}


def xml_prepass_cost(kind: str, files: list[Path], limits: DecodeLimits) -> dict[str, Any]:
    """What the hostile-XML pre-pass (decode to UTF-8, one expat pass with the limit checks) costs per file,
    against the whole working-copy decode of the same files."""
    from ingest.decode.xml_safety import normalise, prepass

    documents = [path.read_bytes() for path in files]
    prepass(normalise(documents[0]), limits)  # warm-up
    started = core_seconds()
    for data in documents:
        prepass(normalise(data), limits)
    pre = core_seconds() - started
    started = core_seconds()
    for path in files:
        decode(path, limits, working_copy=True)
    whole = core_seconds() - started
    return {"kind": kind, "files": len(files), "kib_per_file": round(sum(map(len, documents)) / len(files) / 1024, 1),
            "prepass_ms": _ms(pre, len(files)), "decode_ms": _ms(whole, len(files)),
            "prepass_share": round(pre / whole, 3)}


def _encode_row(name: str, image: np.ndarray, extension: str, params: list[int], repeats: int) -> dict[str, Any]:
    cv2.imencode(extension, image, params)
    started = time.process_time()
    for _ in range(repeats):
        ok, encoded = cv2.imencode(extension, image, params)
    assert ok, name
    return {"format": name, "encode_ms": round(1000 * (time.process_time() - started) / repeats, 3),
            "bytes": int(encoded.size)}


def page_file_sizes(model_input: np.ndarray, thumbnail: np.ndarray, repeats: int = 20) -> dict[str, Any]:
    """What storing a page's model input and thumbnail costs per format: encode core-ms and bytes."""
    result: dict[str, Any] = {}
    for name, image in (("model_input", model_input), ("thumbnail", thumbnail)):
        rows = [_encode_row(f"png{level}", image, ".png", [cv2.IMWRITE_PNG_COMPRESSION, level], repeats)
                for level in PNG_LEVELS]
        rows.append(_encode_row("webp_lossless", image, ".webp", [cv2.IMWRITE_WEBP_QUALITY, WEBP_LOSSLESS], repeats))
        if name == "thumbnail":
            rows.append(_encode_row("jpeg_q85", image, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 85], repeats))
        result[name] = {"shape": list(image.shape), "dtype": str(image.dtype), "formats": rows}
    return result


def pdf_options(files: list[Path], limits: DecodeLimits) -> list[dict[str, Any]]:
    """Core-ms per page of poppler rasterising (as decode_pdf does it) under each option worth trying."""
    from pdf2image import convert_from_bytes, pdfinfo_from_bytes

    from ingest.decode.pdf import page_sizes, raster_dpi

    documents = [path.read_bytes() for path in files]
    infos = [pdfinfo_from_bytes(data, first_page=1, last_page=limits.max_pages) for data in documents]
    working = [raster_dpi(info, limits, working_copy=True) for info in infos]
    widths = [round(max(width for width, _ in page_sizes(info, dpi))) for info, dpi in zip(infos, working, strict=True)]

    def to_bgr(image: Any) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.ndim == 3 else cv2.COLOR_GRAY2BGR)

    options: dict[str, Callable[[int], dict[str, Any]]] = {
        "colour_full_dpi": lambda i: {"dpi": limits.pdf_dpi},
        "colour_working_dpi (kept)": lambda i: {"dpi": working[i]},
        "grayscale_working_dpi": lambda i: {"dpi": working[i], "grayscale": True},
        "grayscale_full_dpi": lambda i: {"dpi": limits.pdf_dpi, "grayscale": True},
        "pdftocairo_working_dpi": lambda i: {"dpi": working[i], "use_pdftocairo": True},
        "thread_count_2_working_dpi": lambda i: {"dpi": working[i], "thread_count": 2},
        "size_working_width": lambda i: {"size": (widths[i], None)},
    }
    rows = []
    for name, kwargs in options.items():
        to_bgr(convert_from_bytes(documents[0], **kwargs(0))[0])
        started = core_seconds()
        pages = 0
        for index, data in enumerate(documents):
            images = convert_from_bytes(data, **kwargs(index))
            for image in images:
                to_bgr(image)
            pages += len(images)
        rows.append({"option": name, "core_ms_per_page": _ms(core_seconds() - started, pages),
                     "size": list(images[0].size)})
    return rows


def accuracy(bundle_dir: Path, data_dir: Path, n_bootstrap: int = 1000) -> dict[str, Any]:
    """Macro AUROC of the bundle on a labelled folder, full-resolution against working-copy decoding."""
    from model_training.bundle import load_model
    from model_training.evaluate import metrics, paired_comparison, predict_files, read_labels

    model, manifest = load_model(Path(bundle_dir))
    labels = list(manifest.labels)
    paths, y_true = read_labels(Path(data_dir), labels)
    thresholds = {label: manifest.threshold(label) for label in labels}
    full = predict_files(model, manifest, paths, working_copy=False)
    working = predict_files(model, manifest, paths, working_copy=True)
    paired = paired_comparison(y_true, full, working, labels, n_bootstrap=n_bootstrap)
    return {"data": str(data_dir), "files": len(paths),
            "macro_auroc_full": metrics(y_true, full, labels, thresholds, n_bootstrap=0)["macro_auroc"],
            "macro_auroc_working_copy": metrics(y_true, working, labels, thresholds, n_bootstrap=0)["macro_auroc"],
            "macro_auroc_diff": paired["macro_auroc_diff"], "macro_auroc_diff_ci": paired["macro_auroc_diff_ci"],
            "max_abs_probability_diff": round(float(np.abs(full - working).max()), 4)}


def format_agreement(bundle_dir: Path, files: dict[str, list[Path]]) -> dict[str, Any]:
    """The bundle's probabilities for the same recordings written as every waveform kind (the generator writes
    each record's kinds from one signal): how far they spread across the kinds of one recording, against how far
    they spread across recordings. Intake must give one answer per ECG, whatever format carried it."""
    from model_training.bundle import load_model
    from model_training.evaluate import predict_files

    kinds = [kind for kind in WAVEFORM_KINDS if files.get(kind)]
    if len(kinds) < 2:
        return {}
    records = [[path.name[:6] for path in files[kind]] for kind in kinds]
    assert all(names == records[0] for names in records), "every waveform kind needs the same records"
    model, manifest = load_model(bundle_dir)
    paths = [path for kind in kinds for path in files[kind]]
    probabilities = predict_files(model, manifest, paths).reshape(len(kinds), len(records[0]), -1)
    within = np.ptp(probabilities, axis=0)  # (records, labels)
    reference = probabilities[0]
    return {"recordings": len(records[0]), "kinds": kinds, "labels": list(manifest.labels),
            "max_spread_within_recording": round(float(within.max()), 4),
            "mean_spread_within_recording": round(float(within.mean()), 4),
            "recordings_spread_over_0_05": int((within.max(axis=1) > 0.05).sum()),
            "max_abs_diff_from_" + kinds[0]: {kind: round(float(np.abs(probabilities[i] - reference).max()), 4)
                                             for i, kind in enumerate(kinds)},
            "mean_spread_across_recordings": round(float(np.ptp(reference, axis=0).mean()), 4)}


def bench_decode(bundle_dir: Path, n: int = 30, dpi: int = 200, kinds: tuple[str, ...] = tuple(DECODE_KINDS),
                 accuracy_set: Path | None = None) -> dict:
    """Core-ms per page per input kind, full-resolution and working-copy decoding, each with its cleaning."""
    from model_training.manifest import load_manifest

    manifest = load_manifest(bundle_dir)
    input_size = tuple(manifest.input_size)
    preparation = manifest.preparation
    limits = DecodeLimits(pdf_dpi=dpi)
    model = model_images_per_second(bundle_dir)  # first, on a quiet process
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            synth_inputs(folder, n, kinds, "light", seed=990, dpi=dpi)
            files = {kind: sorted(p for p in folder.iterdir() if p.name.endswith(DECODE_KINDS[kind]))
                     for kind in kinds}
            for kind in kinds:
                rows.append(_kind_row(kind, files[kind], limits, preparation))
            sample = files["jpg"][0] if "jpg" in kinds else files[kinds[0]][0]
            _, (page, *_) = decode(sample, limits, working_copy=True)
            prepared = preparation(page)
            page_files = page_file_sizes(prepared.model_input, prepared.thumbnail)
            pdf = pdf_options(files["pdf"], limits) if "pdf" in kinds else []
            xml = [xml_prepass_cost(kind, files[kind], limits) for kind in kinds if kind in XML_KINDS]
            agreement = format_agreement(bundle_dir, files)
    finally:
        cv2.setNumThreads(threads)
    for row in rows:
        row["ratio_to_model"] = round(row["decode_preprocess_pages_per_s"] / model, 2)
    result = {"benchmark": "decode", "dpi": dpi, "input_size": list(input_size), "processes": 1, "timing": TIMING,
              "model_images_per_s": round(model, 1), "model_batch_size": 8, "cpu_count": os.cpu_count(),
              "kinds": rows, "slowest_ratio": min(r["ratio_to_model"] for r in rows),
              "total": _totals(rows), "page_files": page_files, "pdf_options": pdf, "xml_prepass": xml,
              "format_agreement": agreement}
    if accuracy_set is not None:
        result["accuracy"] = accuracy(bundle_dir, accuracy_set)
    return result


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every kind's pages together: what a mixed inbox with one page of each kind costs per page."""
    pages = sum(r["pages"] for r in rows)
    full = sum(r["full_total_ms"] * r["pages"] for r in rows) / pages
    working = sum(r["working_total_ms"] * r["pages"] for r in rows) / pages
    return {"pages": pages, "full_total_ms": round(full, 1), "working_total_ms": round(working, 1),
            "full_pages_per_s": round(1000 / full, 1), "working_pages_per_s": round(1000 / working, 1),
            "speedup": round(full / working, 2)}
