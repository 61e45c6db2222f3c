"""Write synthetic records as the DICOM objects hospitals send: 12-lead waveform, secondary capture, PDF."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from model_training.synth.signals import Record

ECG_12_LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
# SCP-ECG lead codes, as cart vendors and pydicom's own example use them.
SCPECG_CODES = {"I": "5.6.3-9-1", "II": "5.6.3-9-2", "V1": "5.6.3-9-3", "V2": "5.6.3-9-4", "V3": "5.6.3-9-5",
                "V4": "5.6.3-9-6", "V5": "5.6.3-9-7", "V6": "5.6.3-9-8", "III": "5.6.3-9-61", "aVR": "5.6.3-9-62",
                "aVL": "5.6.3-9-63", "aVF": "5.6.3-9-64"}
MICROVOLTS_PER_UNIT = 2.5


def _base(sop_class: str, modality: str, record: Record) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
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


def _code(value: str, scheme: str, meaning: str, version: str | None = None) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    if version:
        item.CodingSchemeVersion = version
    return item


def waveform_dataset(record: Record) -> Dataset:
    """12-Lead ECG Waveform Storage: int16 samples at 2.5 uV per unit, SCP-ECG lead codes."""
    ds = _base(ECG_12_LEAD, "ECG", record)
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(record.leads)
    group.NumberOfWaveformSamples = record.signals.shape[1]
    group.SamplingFrequency = float(record.fs)
    group.MultiplexGroupLabel = "RHYTHM"
    channels = []
    for lead in record.leads:
        channel = Dataset()
        channel.ChannelSourceSequence = Sequence([_code(SCPECG_CODES[lead], "SCPECG", f"Lead {lead}", "1.3")])
        channel.ChannelSensitivity = MICROVOLTS_PER_UNIT
        channel.ChannelSensitivityUnitsSequence = Sequence([_code("uV", "UCUM", "microvolt", "1.4")])
        channel.ChannelSensitivityCorrectionFactor = 1
        channel.ChannelBaseline = 0
        channel.ChannelSampleSkew = 0
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    units = np.clip(np.round(record.signals * 1000.0 / MICROVOLTS_PER_UNIT), -32768, 32767).astype("<i2")
    group.WaveformData = units.T.tobytes()  # multiplexed: sample by sample, channels interleaved
    ds.WaveformSequence = Sequence([group])
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
