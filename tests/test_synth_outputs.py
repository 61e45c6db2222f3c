"""DICOM and PTB-XL exports of the synthetic set: valid objects, right channels, units, rates and labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ingest.decode import decode
from model_training.ptbxl import LABELS, load_database, read_signals
from model_training.synth.dataset import item_seed, write_dataset
from model_training.synth.dicom_out import ECG_12_LEAD, ENCAPSULATED_PDF, SECONDARY_CAPTURE
from model_training.synth.signals import generate_record


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    write_dataset(out, 6, ("dicom-waveform", "dicom-sc", "dicom-pdf", "wfdb"), "light", seed=9, dpi=100, workers=1)
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "labels.csv") as handle:
        return list(csv.DictReader(handle))


def test_waveform_dicom_reads_back_with_channels_units_and_rate(exported: Path) -> None:
    row = next(r for r in _rows(exported) if r["format"] == "dicom-waveform")
    ds = pydicom.dcmread(exported / row["file"])
    assert ds.SOPClassUID == ECG_12_LEAD and ds.Modality == "ECG"
    group = ds.WaveformSequence[0]
    assert group.NumberOfWaveformChannels == 12 and float(group.SamplingFrequency) == 500.0
    meanings = [c.ChannelSourceSequence[0].CodeMeaning for c in group.ChannelDefinitionSequence]
    assert meanings[:3] == ["Lead I", "Lead II", "Lead III"] and meanings[-1] == "Lead V6"
    assert {c.ChannelSensitivityUnitsSequence[0].CodeValue for c in group.ChannelDefinitionSequence} == {"uV"}
    microvolts = ds.waveform_array(0).T
    record = generate_record(int(row["seed"]))
    np.testing.assert_allclose(microvolts / 1000.0, record.signals, atol=2e-3)
    file_type, pages = decode(exported / row["file"])  # our own intake renders it as a paper page
    assert file_type.value == "dicom" and pages[0].image.ndim == 3


def test_secondary_capture_and_encapsulated_pdf_are_valid(exported: Path) -> None:
    rows = _rows(exported)
    sc = pydicom.dcmread(exported / next(r["file"] for r in rows if r["format"] == "dicom-sc"))
    assert sc.SOPClassUID == SECONDARY_CAPTURE and sc.PhotometricInterpretation == "RGB"
    assert sc.pixel_array.shape == (sc.Rows, sc.Columns, 3) and sc.pixel_array.std() > 5
    pdf = pydicom.dcmread(exported / next(r["file"] for r in rows if r["format"] == "dicom-pdf"))
    assert pdf.SOPClassUID == ENCAPSULATED_PDF and pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert bytes(pdf.EncapsulatedDocument).startswith(b"%PDF-")


def test_wfdb_export_loads_like_ptbxl_with_the_same_labels(exported: Path) -> None:
    database = load_database(exported / "ptbxl")
    assert len(database) == 6 and set(database["strat_fold"]) <= set(range(1, 11))
    for index in range(6):
        record = generate_record(item_seed(9, index))
        row = database.loc[index + 1]
        assert [int(row[label]) for label in LABELS] == [record.labels[label] for label in LABELS]
        for column, rate, samples in (("filename_hr", 500, 5000), ("filename_lr", 100, 1000)):
            signals, fs, names = read_signals(exported / "ptbxl", row[column])
            assert fs == rate and signals.shape == (12, samples) and names[3] == "aVR"
        hr, _, _ = read_signals(exported / "ptbxl", row["filename_hr"])
        np.testing.assert_allclose(hr, record.signals, atol=1e-3)
