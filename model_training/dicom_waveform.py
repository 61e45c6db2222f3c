"""12-Lead ECG Waveform Storage objects from leads in millivolts: what the generator writes for training and
tests, and what `ecg-intake digitise --format dicom` writes beside a page.

int16 samples at 2.5 uV per unit with SCP-ECG lead codes, as carts and pydicom's own example store them. A
sample the source did not show is the group's Waveform Padding Value, never 0 mV.
"""

from __future__ import annotations

from collections.abc import Sequence as Names

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ECG_12_LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"
# SCP-ECG lead codes, as cart vendors and pydicom's own example use them.
SCPECG_CODES = {"I": "5.6.3-9-1", "II": "5.6.3-9-2", "V1": "5.6.3-9-3", "V2": "5.6.3-9-4", "V3": "5.6.3-9-5",
                "V4": "5.6.3-9-6", "V5": "5.6.3-9-7", "V6": "5.6.3-9-8", "III": "5.6.3-9-61", "aVR": "5.6.3-9-62",
                "aVL": "5.6.3-9-63", "aVF": "5.6.3-9-64"}
MICROVOLTS_PER_UNIT = 2.5
PADDING = -32768  # the int16 that marks a sample not shown


def new_dataset(sop_class: str, modality: str) -> Dataset:
    """An empty object of `sop_class` with fresh instance, study and series UIDs, ready for Part 10."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    return ds


def code(value: str, scheme: str, meaning: str, version: str | None = None) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    if version:
        item.CodingSchemeVersion = version
    return item


def waveform_group(signals_mv: np.ndarray, fs: float, leads: Names[str], originality: str = "ORIGINAL") -> Dataset:
    """One multiplexed group of `leads` (rows of `signals_mv`); NaN samples become the padding value."""
    group = Dataset()
    group.WaveformOriginality = originality
    group.NumberOfWaveformChannels = len(leads)
    group.NumberOfWaveformSamples = signals_mv.shape[1]
    group.SamplingFrequency = float(fs)
    group.MultiplexGroupLabel = "RHYTHM"
    channels = []
    for lead in leads:
        channel = Dataset()
        channel.ChannelSourceSequence = Sequence([code(SCPECG_CODES[lead], "SCPECG", f"Lead {lead}", "1.3")])
        channel.ChannelSensitivity = MICROVOLTS_PER_UNIT
        channel.ChannelSensitivityUnitsSequence = Sequence([code("uV", "UCUM", "microvolt", "1.4")])
        channel.ChannelSensitivityCorrectionFactor = 1
        channel.ChannelBaseline = 0
        channel.ChannelSampleSkew = 0
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    units = np.round(np.nan_to_num(signals_mv, nan=0.0) * 1000.0 / MICROVOLTS_PER_UNIT)
    units = np.clip(units, PADDING + 1, 32767).astype("<i2")
    missing = ~np.isfinite(signals_mv)
    if missing.any():
        units[missing] = PADDING
        group.WaveformPaddingValue = np.array([PADDING], "<i2").tobytes()
    group.WaveformData = units.T.tobytes()  # multiplexed: sample by sample, channels interleaved
    return group
