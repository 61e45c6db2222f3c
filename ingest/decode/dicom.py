"""DICOM objects through pydicom.

12-lead and general ECG waveforms are drawn as paper ECGs with `ingest.render`; secondary-capture and
other image objects become pages (VOI LUT applied, MONOCHROME1 inverted, 16-bit scaled to 8); an
encapsulated PDF goes through the PDF decoder. Imaging modalities (CT, MR, ...) and DICOMDIR indexes are
`not_ecg`. Compressed pixel data decodes where pydicom has a decoder installed (Pillow covers JPEG
baseline, pylibjpeg-libjpeg JPEG lossless/extended and JPEG-LS, pylibjpeg-openjpeg JPEG 2000, pydicom
itself RLE and deflate); otherwise the file is quarantined as `unsupported_type`, never guessed at.

With `working_copy` pages come back as the working copy `clean` would make: image frames are shrunk right
after the pixel data is decoded (palette frames after their colour lookup, as indices cannot be averaged),
waveforms are drawn at the working resolution, and encapsulated PDFs are rasterised at it.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_voi_lut

from ingest.decode.limits import DecodeLimits
from ingest.decode.pdf import decode_pdf
from ingest.decode.pixels import stretch_to_uint8
from ingest.decode.working import shrink, work_factor
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.render import PAGE_SECONDS, STANDARD_LEADS, PaperStyle, render_paper

# pydicom's "invalid value" warnings quote the value itself, which may be a patient's name or ID; a
# malformed element that matters still fails decoding with a reason of our own.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

_UNIT_TO_MV = {"uV": 1e-3, "mV": 1.0, "V": 1e3}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ECG_WAVEFORMS = {"1.2.840.10008.5.1.4.1.1.9.1.1", "1.2.840.10008.5.1.4.1.1.9.1.2", "1.2.840.10008.5.1.4.1.1.9.1.3"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame variants .7.1 to .7.4
# Modalities that are pictures of anatomy, never a printed ECG.
IMAGING_MODALITIES = {"CT", "MR", "PT", "NM", "US", "XA", "RF", "MG", "CR", "DX", "IO", "PX", "OP", "OPT", "SEG",
                      "RTIMAGE", "RTDOSE", "RTSTRUCT", "RTPLAN", "SM", "BMD"}
METADATA_TAGS = {"PatientID": "patient_id", "AccessionNumber": "accession_number",
             "StudyInstanceUID": "study_instance_uid", "AcquisitionDateTime": "acquisition_time",
             "Manufacturer": "manufacturer", "ManufacturerModelName": "device_model",
             "DeviceSerialNumber": "device_serial", "Modality": "modality", "SOPClassUID": "sop_class_uid"}


def _metadata(ds: pydicom.Dataset) -> dict[str, str]:
    """Identifiers for the document record; they go to the database only, never into a log line."""
    found = {key: str(ds.get(tag)) for tag, key in METADATA_TAGS.items() if ds.get(tag) not in (None, "")}
    if "acquisition_time" not in found and ds.get("ContentDate"):
        found["acquisition_time"] = f"{ds.ContentDate}{ds.get('ContentTime', '')}"
    return found


def _to_uint8(frame: np.ndarray, ds: pydicom.Dataset, factor: int = 1) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    frame = shrink(frame, factor)
    if frame.ndim == 3:  # colour: pydicom already returns RGB
        if frame.dtype != np.uint8:
            frame = stretch_to_uint8(frame)
        return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    gray = stretch_to_uint8(apply_voi_lut(frame, ds) if frame.dtype != np.uint8 else frame)
    if photometric == "MONOCHROME1":  # high values are dark
        gray = 255 - gray
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _image_pages(ds: pydicom.Dataset, limits: DecodeLimits, working_copy: bool = False) -> list[Page]:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    limits.check_pages(frames)
    limits.check_pixels(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        raise IngestError(Reason.UNSUPPORTED_TYPE, f"no decoder installed for transfer syntax {syntax!s}") from exc
    if frames == 1:
        pixels = pixels[None]
    factor = work_factor(pixels.shape[2]) if working_copy and pixels.ndim >= 3 else 1
    return [Page(image=_to_uint8(frame, ds, factor), page_no=i, source="dicom-image")
            for i, frame in enumerate(pixels, 1)]


def _lead_name(channel) -> str:
    meaning = str(channel.ChannelSourceSequence[0].CodeMeaning)
    for name in sorted(STANDARD_LEADS, key=len, reverse=True):
        if meaning == f"Lead {name}" or meaning.startswith(f"Lead {name} "):
            return name
    return meaning


def working_style() -> PaperStyle:
    """The default paper drawn at the working resolution: `clean`'s factor for the page at the default DPI."""
    style = PaperStyle()
    width_px = round(style.paper_mm[0] / 25.4 * style.dpi)
    return PaperStyle(dpi=round(style.dpi / work_factor(width_px)))


def _rhythm_group(ds: pydicom.Dataset) -> tuple[int, pydicom.Dataset]:
    """The group to draw: the original full-length recording over derived median beats, then the longest.

    Any SOP class qualifies (a 12-lead ECG also arrives as a hemodynamic or general waveform object)."""
    groups = [(i, w) for i, w in enumerate(ds.WaveformSequence) if int(w.NumberOfWaveformChannels) >= 12]
    if not groups:
        raise IngestError(Reason.NOT_ECG, "no waveform group with 12 channels")
    return max(groups, key=lambda g: (g[1].get("WaveformOriginality") == "ORIGINAL",
                                      int(g[1].NumberOfWaveformSamples)))


def _padding_missing(group: pydicom.Dataset, samples: np.ndarray) -> np.ndarray:
    """Samples equal to the group's Waveform Padding Value were not recorded (a digitised page shows each lead for
    a few seconds): NaN, drawn as a gap, never as a value."""
    padding = group.get("WaveformPaddingValue")
    if padding is None or int(group.WaveformBitsAllocated) != 16:
        return samples
    signed = str(group.get("WaveformSampleInterpretation", "SS")) == "SS"
    value = int.from_bytes(bytes(padding)[:2], "little", signed=signed)
    raw = np.frombuffer(group.WaveformData, "<i2" if signed else "<u2")[: samples.size].reshape(samples.shape[::-1]).T
    samples = samples.astype(np.float64, copy=True)
    samples[raw == value] = np.nan
    return samples


def _waveform_page(ds: pydicom.Dataset, limits: DecodeLimits, working_copy: bool = False) -> Page:
    index, group = _rhythm_group(ds)
    # The header's size, checked before pydicom allocates the samples (a bomb never inflates).
    limits.check_waveform(int(group.NumberOfWaveformChannels), int(group.NumberOfWaveformSamples))
    fs = float(group.SamplingFrequency)
    if fs <= 0:
        raise IngestError(Reason.CORRUPT, f"waveform sampling frequency {fs} is not positive")
    samples = ds.waveform_array(index).T  # channels x samples, sensitivity and baseline applied
    samples = _padding_missing(group, samples)[:, :round(PAGE_SECONDS * fs)]
    channels = group.ChannelDefinitionSequence
    leads = [_lead_name(c) for c in channels]
    scale = np.array([_UNIT_TO_MV.get(str(c.ChannelSensitivityUnitsSequence[0].CodeValue), 1e-3)
                      for c in channels])[:, None]
    keep = [i for i, name in enumerate(leads) if name in STANDARD_LEADS]
    if len(keep) < 12:
        raise IngestError(Reason.NOT_ECG, f"waveform has {len(keep)} of the 12 standard leads")
    names = [leads[i] for i in keep]
    millivolts = samples[keep] * scale[keep]
    image = render_paper(millivolts, fs, names, working_style() if working_copy else None)
    signals = millivolts[[names.index(lead) for lead in STANDARD_LEADS]]
    return Page(image=image, page_no=1, source="dicom-waveform", metadata={"sampling_frequency": fs},
                signals=signals)


def _document_or_image(ds: pydicom.Dataset, sop_class: str, limits: DecodeLimits, working_copy: bool) -> list[Page]:
    if sop_class == ENCAPSULATED_PDF or "EncapsulatedDocument" in ds:
        document = bytes(ds.EncapsulatedDocument)
        length = int(ds.get("EncapsulatedDocumentLength") or len(document))
        return decode_pdf(document[:length], limits, working_copy)
    return _image_pages(ds, limits, working_copy)


# What pydicom raises on malformed elements; it parses lazily, so these can surface at any access.
_MALFORMED = (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error, UnicodeError,
              OverflowError, MemoryError, BytesLengthException)


class _ShortReads:
    """Notes every read that got fewer bytes than it asked for.

    pydicom reads a value cut off by the end of the file without complaint (it keeps the short bytes) and
    takes a tag header cut in half for the end of the data, so a truncated file surfaced later as a
    length mismatch and was quarantined `corrupt`. A whole file has exactly one short read: the empty
    8-byte read of the next tag header at its very end; any other short read means the data ends early.
    """

    size: int
    short_reads: list[tuple[int, int, int]]  # (offset, asked, got)

    def read(self, size: int | None = -1, /) -> bytes:
        offset = self.tell()  # type: ignore[attr-defined]
        out = super().read(size)  # type: ignore[misc]
        if size is not None and size >= 0 and len(out) < size:
            self.short_reads.append((offset, size, len(out)))
        return out

    @property
    def ended_early(self) -> bool:
        return any(read != (self.size, 8, 0) for read in self.short_reads) or len(self.short_reads) > 1


class _ReadWatch(_ShortReads, io.BytesIO):
    """The file's bytes in memory, watched for short reads."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.short_reads = []


class _FileWatch(_ShortReads, io.FileIO):
    """A file on disk, watched for short reads, so a large received object is checked without loading it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.size = os.fstat(self.fileno()).st_size
        self.short_reads = []


def _parse(source: _ShortReads, **read_options: object) -> pydicom.Dataset:
    """pydicom's parse with every way a malformed file fails as a reason code."""
    try:
        ds = pydicom.dcmread(source, **read_options)  # type: ignore[arg-type]
    except InvalidDicomError as exc:
        raise IngestError(Reason.CORRUPT, "not a valid DICOM file") from exc
    except (EOFError, OSError) as exc:
        raise IngestError(Reason.TRUNCATED, "the DICOM data ends early") from exc
    except _MALFORMED as exc:
        if source.ended_early:  # e.g. struct.error unpacking a length the file ends before
            raise IngestError(Reason.TRUNCATED, "the DICOM data ends inside a data element") from exc
        raise IngestError(Reason.CORRUPT, f"malformed DICOM data ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if source.ended_early:
        raise IngestError(Reason.TRUNCATED, "the DICOM data ends inside a data element")
    return ds


def check_declared_limits(ds: pydicom.Dataset, limits: DecodeLimits) -> None:
    """The sizes the header declares (frames, pixels per frame, channels x samples per waveform group)
    against the limits, before any of that data is decoded."""
    if "PixelData" in ds:
        limits.check_pages(int(ds.get("NumberOfFrames", 1) or 1))
        limits.check_pixels(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    for group in ds.get("WaveformSequence") or []:
        limits.check_waveform(int(group.get("NumberOfWaveformChannels", 0) or 0),
                              int(group.get("NumberOfWaveformSamples", 0) or 0))


def check_received(path: Path, limits: DecodeLimits) -> pydicom.Dataset:
    """A received Part 10 file read without its large values: whole (not truncated), parseable, within the
    declared-size limits. The network receiver calls this before it keeps an object, so a bad object is
    refused to its sender (who still owns it) instead of being quarantined later."""
    try:
        with _FileWatch(path) as source:
            ds = _parse(source, defer_size="256 KB")
            if len(ds) == 0:
                raise IngestError(Reason.TRUNCATED, "no data elements after the DICOM header")
            check_declared_limits(ds, limits)
    except IngestError:
        raise
    except _MALFORMED as exc:
        raise IngestError(Reason.CORRUPT, f"malformed DICOM data ({type(exc).__name__}: {str(exc)[:200]})") from exc
    return ds


def decode_dicom(data: bytes, limits: DecodeLimits | None = None, working_copy: bool = False) -> list[Page]:
    """Pages of one DICOM file; every way a malformed file fails becomes a reason code."""
    limits = limits or DecodeLimits()
    ds = _parse(_ReadWatch(data))
    try:
        return _decode_dataset(ds, limits, working_copy)
    except IngestError:
        raise
    except (EOFError, OSError) as exc:
        raise IngestError(Reason.TRUNCATED, "the DICOM data ends early") from exc
    except _MALFORMED as exc:
        raise IngestError(Reason.CORRUPT, f"malformed DICOM data ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _decode_dataset(ds: pydicom.Dataset, limits: DecodeLimits, working_copy: bool = False) -> list[Page]:
    sop_class = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        raise IngestError(Reason.NOT_ECG, "a DICOMDIR is an index of other files, not an ECG")
    if len(ds) == 0:
        raise IngestError(Reason.TRUNCATED, "no data elements after the DICOM header")
    if "WaveformSequence" in ds:
        pages = [_waveform_page(ds, limits, working_copy)]
    elif sop_class in ECG_WAVEFORMS or sop_class == ENCAPSULATED_PDF or sop_class.startswith(SECONDARY_CAPTURE):
        if "PixelData" not in ds and "EncapsulatedDocument" not in ds:
            raise IngestError(Reason.TRUNCATED, f"the header announces SOP class {sop_class} but its content is "
                                                "missing")
        pages = _document_or_image(ds, sop_class, limits, working_copy)
    elif str(ds.get("Modality", "")).upper() in IMAGING_MODALITIES:
        raise IngestError(Reason.NOT_ECG, f"DICOM modality {ds.Modality} is an imaging study, not an ECG")
    elif "EncapsulatedDocument" in ds or "PixelData" in ds:
        pages = _document_or_image(ds, sop_class, limits, working_copy)
    else:
        raise IngestError(Reason.NOT_ECG, "DICOM object with neither waveform, image nor document")
    metadata = _metadata(ds)
    for page in pages:
        page.metadata = {**page.metadata, **metadata}
    return pages
