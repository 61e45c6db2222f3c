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


def _ecg_waveform(tmp_path: Path, name: str, change=None) -> Path:
    """pydicom's real 12-lead ECG (an ORIGINAL 10 s rhythm, then DERIVED 1.2 s median beats), changed and saved."""
    ds = pydicom.dcmread(_local("waveform_ecg.dcm"))
    if change:
        change(ds)
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _image(path: Path) -> np.ndarray:
    _, pages = decode(path)
    assert len(pages) == 1 and pages[0].source == "dicom-waveform"
    return pages[0].image


def test_a_12_lead_under_the_hemodynamic_sop_class_decodes(tmp_path: Path) -> None:
    def hemodynamic(ds: pydicom.Dataset) -> None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.9.2.1"
        ds.Modality = "HD"

    assert np.array_equal(_image(_ecg_waveform(tmp_path, "hd.dcm", hemodynamic)),
                          _image(_local("waveform_ecg.dcm")))


def test_the_rhythm_is_drawn_not_the_median_beats_beside_it(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_local("waveform_ecg.dcm"))
    assert [g.WaveformOriginality for g in ds.WaveformSequence] == ["ORIGINAL", "DERIVED"]
    assert int(ds.WaveformSequence[1].NumberOfWaveformSamples) < int(ds.WaveformSequence[0].NumberOfWaveformSamples)

    def rhythm_only(ds: pydicom.Dataset) -> None:
        del ds.WaveformSequence[1]

    def median_first(ds: pydicom.Dataset) -> None:
        ds.WaveformSequence = pydicom.Sequence([ds.WaveformSequence[1], ds.WaveformSequence[0]])

    def median_only(ds: pydicom.Dataset) -> None:
        del ds.WaveformSequence[0]

    rhythm = _image(_ecg_waveform(tmp_path, "rhythm.dcm", rhythm_only))
    assert np.array_equal(_image(_local("waveform_ecg.dcm")), rhythm)
    assert np.array_equal(_image(_ecg_waveform(tmp_path, "median-first.dcm", median_first)), rhythm)
    assert not np.array_equal(_image(_ecg_waveform(tmp_path, "median.dcm", median_only)), rhythm)


def test_the_waveform_size_is_checked_from_the_header_before_allocation(tmp_path: Path) -> None:
    from ingest.decode.dicom import decode_dicom
    from ingest.decode.limits import DecodeLimits

    def bomb(ds: pydicom.Dataset) -> None:  # declares 100 million samples; the data is still 10 000
        ds.WaveformSequence[0].NumberOfWaveformSamples = 100_000_000

    data = _ecg_waveform(tmp_path, "bomb.dcm", bomb).read_bytes()
    with pytest.raises(IngestError) as caught:  # too_large, not the corrupt that reading the samples would give
        decode_dicom(data, DecodeLimits(max_waveform_samples=10_000_000))
    assert caught.value.reason is Reason.TOO_LARGE and "100000000 samples" in caught.value.message
    with pytest.raises(IngestError) as caught:
        decode_dicom(_local("waveform_ecg.dcm").read_bytes(), DecodeLimits(max_waveform_samples=100_000))
    assert caught.value.reason is Reason.TOO_LARGE  # 12 x 10 000 of the real rhythm


def test_a_long_ambulatory_rhythm_is_drawn_from_its_first_10_seconds(tmp_path: Path) -> None:
    def one_minute(ds: pydicom.Dataset) -> None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.3"
        rhythm = ds.WaveformSequence[0]
        rhythm.WaveformData = bytes(rhythm.WaveformData) * 6  # 60 s: the 10 s repeated, multiplexed as before
        rhythm.NumberOfWaveformSamples = int(rhythm.NumberOfWaveformSamples) * 6

    assert np.array_equal(_image(_ecg_waveform(tmp_path, "holter.dcm", one_minute)),
                          _image(_local("waveform_ecg.dcm")))
