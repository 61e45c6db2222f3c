"""Over a thousand broken variants of real files through the real decoders: each gives pages or a known reason.

Mutations are drawn from a seeded generator, so a failure names an input that can be rebuilt exactly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.decode import DecodeLimits, decode_bytes
from ingest.reasons import IngestError, Reason
from model_training.synth.samples import reference_dicom
from tests.inputs import local_dicom, reference_page, scan_pdf, vector_pdf

LIMITS = DecodeLimits(pdf_dpi=50, timeout_s=20)
SLOWEST_ALLOWED_S = 10.0
# seed file -> number of mutants; 1,050 inputs in all
PLAN = {"png": 150, "jpg": 150, "bmp": 100, "tif": 150, "scan.pdf": 120, "vector.pdf": 80, "waveform.dcm": 150,
        "sc-jpeg.dcm": 100, "encapsulated-pdf.dcm": 50}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from model_training.synth.dicom_out import write_encapsulated_pdf
    from model_training.synth.signals import generate_record

    folder = tmp_path_factory.mktemp("seeds")
    page = reference_page(600)
    files = {}
    for ext in ("png", "jpg", "bmp", "tif"):
        cv2.imwrite(str(folder / f"seed.{ext}"), page)
        files[ext] = (folder / f"seed.{ext}").read_bytes()
    files["scan.pdf"] = scan_pdf(folder / "scan.pdf").read_bytes()
    files["vector.pdf"] = vector_pdf(folder / "vector.pdf").read_bytes()
    files["waveform.dcm"] = reference_dicom().read_bytes()
    files["sc-jpeg.dcm"] = local_dicom("SC_rgb_jpeg_dcmtk.dcm").read_bytes()
    files["encapsulated-pdf.dcm"] = write_encapsulated_pdf(generate_record(7), page, 60,
                                                           folder / "enc.dcm").read_bytes()
    return files


def _truncate(data: bytes, rng: np.random.Generator, _other: bytes) -> bytes:
    return data[: int(rng.integers(1, len(data)))]


def _flip_bits(data: bytes, rng: np.random.Generator, _other: bytes) -> bytes:
    out = bytearray(data)
    for position in rng.integers(0, len(out), int(rng.integers(1, 33))):
        out[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _overwrite(data: bytes, rng: np.random.Generator, _other: bytes) -> bytes:
    start = int(rng.integers(0, len(data)))
    length = int(rng.integers(1, 512))
    return data[:start] + rng.bytes(length) + data[start + length :]


def _splice(data: bytes, rng: np.random.Generator, other: bytes) -> bytes:
    """One format's header on another's body: what a mis-saved or concatenated file looks like."""
    cut = int(rng.integers(8, min(len(data), 4096)))
    return data[:cut] + other[int(rng.integers(0, len(other))) :]


def _drop_chunk(data: bytes, rng: np.random.Generator, _other: bytes) -> bytes:
    start = int(rng.integers(0, len(data)))
    return data[:start] + data[start + int(rng.integers(1, 4096)) :]


def _repeat_chunk(data: bytes, rng: np.random.Generator, _other: bytes) -> bytes:
    start = int(rng.integers(0, len(data)))
    chunk = data[start : start + int(rng.integers(1, 4096))]
    return data[:start] + chunk * int(rng.integers(2, 5)) + data[start:]


def _header_only(data: bytes, rng: np.random.Generator, _other: bytes) -> bytes:
    return data[: int(rng.integers(1, 2048))]


def _zero_range(data: bytes, rng: np.random.Generator, _other: bytes) -> bytes:
    start = int(rng.integers(0, len(data)))
    length = int(rng.integers(1, 8192))
    return data[:start] + bytes(min(length, len(data) - start)) + data[start + length :]


MUTATIONS: list[Callable[[bytes, np.random.Generator, bytes], bytes]] = [
    _truncate, _flip_bits, _overwrite, _splice, _drop_chunk, _repeat_chunk, _header_only, _zero_range]


def test_a_thousand_mutated_files_fail_only_with_known_reasons(seeds: dict[str, bytes]) -> None:
    outcomes: Counter[str] = Counter()
    by_mutation: dict[str, Counter[str]] = {m.__name__: Counter() for m in MUTATIONS}
    slowest = 0.0
    names = list(seeds)
    total = 0
    for seed_index, (name, count) in enumerate(PLAN.items()):
        for i in range(count):
            rng = np.random.default_rng([seed_index, i])
            mutation = MUTATIONS[i % len(MUTATIONS)]
            other = seeds[names[int(rng.integers(0, len(names)))]]
            data = mutation(seeds[name], rng, other)
            started = time.perf_counter()
            try:
                _, pages = decode_bytes(data, LIMITS)
            except IngestError as error:
                assert error.reason in Reason and error.message, (name, i, mutation.__name__)
                outcome = error.reason.value
            except Exception as exc:  # the test's point: nothing but IngestError may escape a decoder
                pytest.fail(f"{name} mutant {i} ({mutation.__name__}) raised {type(exc).__name__}: {exc}")
            else:
                assert pages and all(p.image.dtype == np.uint8 and p.image.ndim == 3 and p.image.shape[2] == 3
                                     for p in pages), (name, i, mutation.__name__)
                outcome = "decoded"
            slowest = max(slowest, time.perf_counter() - started)
            outcomes[outcome] += 1
            by_mutation[mutation.__name__][outcome] += 1
            total += 1
    print(f"\n{total} mutants: {dict(outcomes)}; slowest {slowest:.2f}s")
    for mutation, counts in by_mutation.items():
        print(f"  {mutation}: {dict(counts)}")
    assert total >= 1000
    assert slowest < SLOWEST_ALLOWED_S  # no hang
    assert outcomes[Reason.INTERNAL_ERROR.value] == 0
    # The mutations reach past the signature check: several distinct reasons, and some files still decode.
    assert {"truncated", "corrupt", "unsupported_type", "decoded"} <= set(outcomes)


def test_empty_file_and_bare_signatures(tmp_path: Path) -> None:
    for data, reason in [(b"", Reason.EMPTY), (b"%PDF-", Reason.CORRUPT), (b"\x89PNG\r\n\x1a\n", Reason.CORRUPT),
                         (b"\xff\xd8\xff", Reason.CORRUPT), (b"II*\x00", Reason.CORRUPT), (b"BM", Reason.CORRUPT),
                         (bytes(128) + b"DICM", Reason.TRUNCATED)]:
        with pytest.raises(IngestError) as caught:
            decode_bytes(data, LIMITS)
        assert caught.value.reason is reason, data
