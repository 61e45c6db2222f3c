"""DICOM beyond waveforms: images, encapsulated PDF, non-ECG objects, and identifiers kept as metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ingest.decode import decode
from ingest.reasons import IngestError, Reason
from model_training.synth.dicom_out import write_encapsulated_pdf, write_secondary_capture
from model_training.synth.paper import render_page
from model_training.synth.signals import generate_record


def _local(name: str) -> Path:
    """A test file that ships inside pydicom (never one it would download)."""
    path = get_testdata_file(name, download=False)
    assert path, f"{name} is not shipped with this pydicom"
    return Path(path)


@pytest.fixture(scope="module")
def page_and_record():
    record = generate_record(21)
    image, _ = render_page(record, 21, "light", dpi=100)
    return image, record


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "DICOMDIR"])
def test_imaging_studies_and_dicomdir_are_not_ecg(name: str) -> None:
    with pytest.raises(IngestError) as caught:
        decode(_local(name))
    assert caught.value.reason is Reason.NOT_ECG


def test_jpeg_compressed_secondary_capture_decodes() -> None:
    file_type, pages = decode(_local("SC_rgb_jpeg_dcmtk.dcm"))
    assert file_type.value == "dicom" and pages[0].image.shape == (100, 100, 3)


def test_secondary_capture_and_encapsulated_pdf_of_a_page(tmp_path: Path, page_and_record) -> None:
    image, record = page_and_record
    sc = write_secondary_capture(record, image, tmp_path / "sc.dcm")
    _, pages = decode(sc)
    assert np.array_equal(pages[0].image, image)  # lossless round trip, BGR kept
    assert pages[0].metadata["patient_id"] == f"SYN{record.seed}"
    pdf = write_encapsulated_pdf(record, image, 100, tmp_path / "doc.dcm")
    _, pages = decode(pdf)
    assert len(pages) == 1 and abs(pages[0].image.shape[1] - 2 * image.shape[1]) <= 4  # 100 DPI page at 200 DPI


def test_monochrome1_16_bit_is_inverted_to_paper_white(tmp_path: Path, page_and_record) -> None:
    image, record = page_and_record
    ds = pydicom.dcmread(write_secondary_capture(record, image, tmp_path / "sc.dcm"))
    gray = image.mean(axis=2)
    stored = (65535 - gray * 257).astype(np.uint16)  # MONOCHROME1: high values are dark
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME1", 1
    del ds.PlanarConfiguration
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = stored.tobytes()
    ds.save_as(tmp_path / "mono1.dcm", enforce_file_format=True)
    _, pages = decode(tmp_path / "mono1.dcm")
    decoded = pages[0].image[:, :, 0].astype(float)
    assert decoded.mean() > 200  # paper is white, not black
    assert np.corrcoef(decoded.ravel(), gray.ravel())[0, 1] > 0.99


def test_waveform_identifiers_are_metadata() -> None:
    _, pages = decode(_local("waveform_ecg.dcm"))
    ds = pydicom.dcmread(_local("waveform_ecg.dcm"))
    meta = pages[0].metadata
    assert meta["patient_id"] == ds.PatientID and meta["accession_number"] == ds.AccessionNumber
    assert meta["study_instance_uid"] == ds.StudyInstanceUID and meta["sop_class_uid"] == ds.SOPClassUID
