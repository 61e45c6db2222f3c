"""Over a thousand broken variants of real files through the real decoders, and then through the whole service
(`ecg-intake run --once`): each gives pages or a known reason, and every file ends archived or quarantined.

Mutations are drawn from a seeded generator, so a failure names an input that can be rebuilt exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.decode import DecodeLimits, decode_bytes
from ingest.files import sha256_file
from ingest.reasons import IngestError, Reason
from model_training.synth.samples import reference_dicom
from tests.helpers.cli import Cli
from tests.helpers.inputs import local_dicom, reference_page, scan_pdf, vector_pdf

LIMITS = DecodeLimits(pdf_dpi=50, timeout_s=20)
SLOWEST_ALLOWED_S = 10.0
# seed file -> number of mutants; 1,050 inputs in all (the XML and SCP-ECG seeds took their mutants from the image
# seeds)
PLAN = {"png": 80, "jpg": 90, "bmp": 80, "tif": 90, "scan.pdf": 120, "vector.pdf": 80, "waveform.dcm": 140,
        "sc-jpeg.dcm": 80, "encapsulated-pdf.dcm": 50, "muse.xml": 60, "philips.xml": 60, "aecg.xml": 60,
        "record.scp": 60}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from model_training.synth.dicom_out import write_encapsulated_pdf
    from model_training.synth.scp_out import write_scp
    from model_training.synth.signals import generate_record
    from model_training.synth.vendor_out import write_aecg, write_muse, write_philips

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
    record = generate_record(11)
    files["muse.xml"] = write_muse(record.signals, record.fs, statements=["Sinus rhythm"])  # 8 leads, ISO-8859-1
    files["philips.xml"] = write_philips(record.signals, record.fs)  # UTF-16 with a BOM, XLI-compressed
    files["aecg.xml"] = write_aecg(record.signals, record.fs)
    files["record.scp"] = write_scp(record.signals, record.fs, statements=["Sinus rhythm"])  # uncompressed
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


def corpus(seeds: dict[str, bytes]) -> Iterator[tuple[str, int, Callable, bytes]]:
    """Every mutant of the plan, rebuilt the same way each time: (seed name, index, mutation, bytes)."""
    names = list(seeds)
    for seed_index, (name, count) in enumerate(PLAN.items()):
        for i in range(count):
            rng = np.random.default_rng([seed_index, i])
            mutation = MUTATIONS[i % len(MUTATIONS)]
            other = seeds[names[int(rng.integers(0, len(names)))]]
            yield name, i, mutation, mutation(seeds[name], rng, other)


@dataclass(frozen=True)
class Verdict:
    """What the decoders, run in this process, made of one mutant."""

    name: str
    index: int
    mutation: str
    data: bytes
    outcome: str  # a reason code, or "decoded"
    seconds: float

    @property
    def file_name(self) -> str:
        """The mutant's name in an inbox; it keeps the seed's extension, which the sniffer must ignore anyway."""
        stem, _, ext = self.name.partition(".")
        return f"{stem}-{self.index:03d}-{self.mutation.strip('_')}.{ext}"


@pytest.fixture(scope="module")
def verdicts(seeds: dict[str, bytes]) -> list[Verdict]:
    """Every mutant through `decode_bytes`; anything but IngestError escaping a decoder fails here."""
    found = []
    for name, i, mutation, data in corpus(seeds):
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
        found.append(Verdict(name, i, mutation.__name__, data, outcome, time.perf_counter() - started))
    return found


def test_a_thousand_mutated_files_fail_only_with_known_reasons(verdicts: list[Verdict]) -> None:
    outcomes = Counter(v.outcome for v in verdicts)
    by_mutation: dict[str, Counter[str]] = {m.__name__: Counter() for m in MUTATIONS}
    for verdict in verdicts:
        by_mutation[verdict.mutation][verdict.outcome] += 1
    slowest = max(v.seconds for v in verdicts)
    print(f"\n{len(verdicts)} mutants: {dict(outcomes)}; slowest {slowest:.2f}s")
    for mutation, counts in by_mutation.items():
        print(f"  {mutation}: {dict(counts)}")
    assert len(verdicts) >= 1000
    assert slowest < SLOWEST_ALLOWED_S  # no hang
    assert outcomes[Reason.INTERNAL_ERROR.value] == 0
    # The mutations reach past the signature check: several distinct reasons, and some files still decode.
    assert {"truncated", "corrupt", "unsupported_type", "decoded"} <= set(outcomes)


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]


@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
@pytest.mark.timeout(1800)  # `run --once` may take up to 1500 s
def test_the_corpus_through_the_whole_service(verdicts: list[Verdict], cli: Cli, home: Path, tmp_path: Path) -> None:
    """Every mutant dropped into one inbox and `ecg-intake run --once`: the process ends cleanly, every file is
    archived or quarantined (with its `.reason.json`), none is lost, and each quarantine reason is the one the
    decoders give in this process, never internal_error."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for verdict in verdicts:
        (inbox / verdict.file_name).write_bytes(verdict.data)
    old = time.time() - 60  # complete files: the watcher need not wait for them to settle
    for path in inbox.iterdir():
        os.utime(path, (old, old))
    cli.env.update({"ECG_INTAKE_PDF_DPI": str(LIMITS.pdf_dpi), "ECG_INTAKE_DECODE_TIMEOUT": str(LIMITS.timeout_s)})
    started = time.perf_counter()
    result = cli("run", "--once", "--inbox", str(inbox), check=False, timeout=1500)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert _files(inbox) == [], "files left in the inbox or its claim area"
    archived = _files(home / "archive")
    quarantined = [p for p in _files(home / "quarantine") if not p.name.endswith(".reason.json")]
    reasons = {p for p in _files(home / "quarantine") if p.name.endswith(".reason.json")}
    assert len(archived) + len(quarantined) == len(verdicts)  # nothing lost, nothing made up
    assert reasons == {p.with_name(p.name + ".reason.json") for p in quarantined}

    expected: dict[str, str] = {}  # sha256 -> the first verdict for those bytes (later ones are duplicates)
    for verdict in verdicts:
        expected.setdefault(hashlib.sha256(verdict.data).hexdigest(), verdict.outcome)
    mismatched = []
    for path in archived:
        sha = sha256_file(path)
        if expected[sha] != "decoded":
            mismatched.append((path.name, "archived", expected[sha]))
    for path in quarantined:
        sha = sha256_file(path)
        reason = json.loads(path.with_name(path.name + ".reason.json").read_text())["reason"]
        assert reason in set(Reason) - {Reason.INTERNAL_ERROR}, (path.name, reason)
        if reason != expected[sha]:
            mismatched.append((path.name, reason, expected[sha]))
    assert not mismatched, mismatched[:20]
    assert {sha256_file(p) for p in [*archived, *quarantined]} == set(expected)
    print(f"\n{len(verdicts)} files through `run --once` in {elapsed:.0f}s: {len(archived)} archived, "
          f"{len(quarantined)} quarantined: {dict(Counter(json.loads(p.read_text())['reason'] for p in reasons))}")


def test_empty_file_and_bare_signatures(tmp_path: Path) -> None:
    for data, reason in [(b"", Reason.EMPTY), (b"%PDF-", Reason.CORRUPT), (b"\x89PNG\r\n\x1a\n", Reason.CORRUPT),
                         (b"\xff\xd8\xff", Reason.CORRUPT), (b"II*\x00", Reason.CORRUPT), (b"BM", Reason.CORRUPT),
                         (bytes(128) + b"DICM", Reason.TRUNCATED)]:
        with pytest.raises(IngestError) as caught:
            decode_bytes(data, LIMITS)
        assert caught.value.reason is reason, data
