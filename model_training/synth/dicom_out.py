"""Write synthetic records as the DICOM objects hospitals send: 12-lead waveform, secondary capture, PDF."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from model_training.dicom_waveform import ECG_12_LEAD, new_dataset, waveform_group
from model_training.synth.signals import Record

__all__ = ["ECG_12_LEAD", "ENCAPSULATED_PDF", "SECONDARY_CAPTURE", "waveform_dataset", "write_encapsulated_pdf",
           "write_secondary_capture", "write_waveform"]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _base(sop_class: str, modality: str, record: Record) -> Dataset:
    ds = new_dataset(sop_class, modality)
    ds.PatientName = f"SYNTHETIC^{record.seed}"
    ds.PatientID = f"SYN{record.seed}"
    ds.PatientSex = record.params.get("sex", "O")
    ds.PatientAge = f"{record.params.get('age', 50):03d}Y"
    now = datetime(2024, 1, 1, 12, 0, 0)
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.Manufacturer = "ecg-intake synthetic"
    ds.AccessionNumber = f"ACC{record.seed % 10**8}"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    return ds


def waveform_dataset(record: Record) -> Dataset:
    """12-Lead ECG Waveform Storage of the record (`model_training.dicom_waveform`)."""
    ds = _base(ECG_12_LEAD, "ECG", record)
    ds.WaveformSequence = Sequence([waveform_group(record.signals, record.fs, record.leads)])
    return ds


def write_waveform(record: Record, path: Path) -> Path:
    waveform_dataset(record).save_as(path, enforce_file_format=True)
    return path


def write_secondary_capture(record: Record, image_bgr: np.ndarray, path: Path) -> Path:
    """Secondary Capture Image Storage of the rendered (or scanned) page, RGB 8-bit."""
    ds = _base(SECONDARY_CAPTURE, "OT", record)
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.BurnedInAnnotation = "YES"
    ds.PixelData = np.ascontiguousarray(rgb).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_encapsulated_pdf(record: Record, image_bgr: np.ndarray, dpi: int, path: Path) -> Path:
    """Encapsulated PDF Storage wrapping a one-page PDF of the page, as ECG management systems export."""
    buffer = io.BytesIO()
    Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)).save(buffer, format="PDF", resolution=float(dpi))
    document = buffer.getvalue()
    ds = _base(ENCAPSULATED_PDF, "DOC", record)
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "12-lead ECG"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = document + (b"\0" if len(document) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(document)
    ds.save_as(path, enforce_file_format=True)
    return path
