"""Type sniffing and the real decoders on real files: PNG, JPEG, multi-page PDF, DICOM waveform, bad bytes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ingest.decode import DecodeLimits, decode
from ingest.reasons import IngestError, Reason
from ingest.sniff import FileType, sniff
from model_training.synth.samples import reference_dicom, write_samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("samples")
    return {path.name: path for path in write_samples(folder)}


@pytest.mark.parametrize(("name", "expected", "pages"), [
    ("ecg-scan.png", FileType.PNG, 1),
    ("ecg-photo.jpg", FileType.JPEG, 1),
    ("ecg-report.pdf", FileType.PDF, 2),
    ("ecg-waveform.dcm", FileType.DICOM, 1),
])
def test_decodes_each_sample_type(samples: dict[str, Path], name: str, expected: FileType, pages: int) -> None:
    file_type, decoded = decode(samples[name], DecodeLimits(pdf_dpi=100))
    assert file_type is expected
    assert [p.page_no for p in decoded] == list(range(1, pages + 1))
    for page in decoded:
        assert page.image.dtype == np.uint8 and page.image.ndim == 3
        # An ECG page is mostly paper with dark trace pixels on it.
        gray = cv2.cvtColor(page.image, cv2.COLOR_BGR2GRAY)
        assert 0.001 < (gray < 100).mean() < 0.2


def test_type_comes_from_bytes_not_extension(tmp_path: Path, samples: dict[str, Path]) -> None:
    renamed = tmp_path / "scan.pdf"
    renamed.write_bytes(samples["ecg-scan.png"].read_bytes())
    assert sniff(renamed) is FileType.PNG
    assert decode(renamed)[0] is FileType.PNG


def test_pdf_at_200_dpi_is_a4_sized(samples: dict[str, Path]) -> None:
    _, pages = decode(samples["ecg-report.pdf"], DecodeLimits(pdf_dpi=200))
    height, width = pages[0].image.shape[:2]
    assert abs(width - 2339) <= 2 and abs(height - 1654) <= 2


@pytest.mark.parametrize(("content", "reason"), [
    (b"", Reason.EMPTY),
    (np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes(), Reason.UNSUPPORTED_TYPE),
    (b"%PDF-1.7\n%garbage that is not a pdf body\n", Reason.CORRUPT),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, Reason.CORRUPT),
])
def test_bad_bytes_raise_a_reason(tmp_path: Path, content: bytes, reason: Reason) -> None:
    path = tmp_path / "bad.pdf"
    path.write_bytes(content)
    with pytest.raises(IngestError) as caught:
        decode(path)
    assert caught.value.reason is reason
    assert caught.value.message


def test_truncated_pdf_is_rejected_with_a_reason(tmp_path: Path, samples: dict[str, Path]) -> None:
    data = samples["ecg-report.pdf"].read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(IngestError) as caught:
        decode(path)
    assert caught.value.reason in (Reason.CORRUPT, Reason.TRUNCATED)


def test_dicom_waveform_is_rendered_in_millivolts_at_paper_scale() -> None:
    """pydicom's file stores microvolts; 1 mV must be 10 mm tall on the page (about 79 px at 200 DPI)."""
    _, pages = decode(reference_dicom())
    gray = cv2.cvtColor(pages[0].image, cv2.COLOR_BGR2GRAY)
    ink = gray < 80
    # The calibration pulse of the first row sits left of the traces; its dark vertical extent is 1 mV.
    px_per_mm = 200 / 25.4
    pulse_column = ink[int(25 * px_per_mm) : int(70 * px_per_mm), int(19 * px_per_mm) : int(26 * px_per_mm)]
    rows = np.flatnonzero(pulse_column.any(axis=1))
    assert rows.size, "no calibration pulse found"
    assert abs((rows.max() - rows.min()) - 10 * px_per_mm) < 4


def test_rgba_png_decodes(tmp_path: Path) -> None:
    rgba = np.full((120, 200, 4), 255, np.uint8)
    rgba[60, :, :3] = 0
    path = tmp_path / "x.png"
    Image.fromarray(rgba, "RGBA").save(path)
    _, pages = decode(path)
    assert pages[0].image.shape == (120, 200, 3)


@pytest.mark.parametrize(("writer", "expected"), [("write_muse", FileType.GE_MUSE), ("write_philips", FileType.PHILIPS),
                                                  ("write_aecg", FileType.HL7_AECG)])
def test_vendor_ecg_xml_is_sniffed_by_its_root_and_drawn_as_paper(tmp_path: Path, writer: str,
                                                                  expected: FileType) -> None:
    from model_training.synth import vendor_out
    from model_training.synth.signals import generate_record

    record = generate_record(5)
    path = tmp_path / "export.png"  # the name says PNG; the bytes say otherwise
    path.write_bytes(getattr(vendor_out, writer)(record.signals, record.fs))
    assert sniff(path) is expected
    file_type, (page,) = decode(path)
    assert file_type is expected and page.metadata["vendor_format"] == expected.value
    gray = cv2.cvtColor(page.image, cv2.COLOR_BGR2GRAY)
    assert 0.001 < (gray < 100).mean() < 0.2


@pytest.mark.parametrize(("content", "reason", "words"), [
    (b"<html><body>not an ECG</body></html>", Reason.UNSUPPORTED_TYPE, "<html>"),
    (b"\xef\xbb\xbf<?xml version='1.0'?><!-- a comment --><note/>", Reason.UNSUPPORTED_TYPE, "<note>"),
    ("<?xml version='1.0' encoding='UTF-16'?><ClinicalDocument xmlns='urn:hl7-org:v3'/>".encode("utf-16"),
     Reason.UNSUPPORTED_TYPE, "<ClinicalDocument>"),
    (b"plain text, not XML", Reason.UNSUPPORTED_TYPE, "no known file signature"),
])
def test_other_xml_and_text_are_unsupported_with_the_root_named(tmp_path: Path, content: bytes, reason: Reason,
                                                                words: str) -> None:
    path = tmp_path / "export.xml"
    path.write_bytes(content)
    with pytest.raises(IngestError) as caught:
        decode(path)
    assert caught.value.reason is reason and words in caught.value.message
