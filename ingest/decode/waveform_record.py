"""An ecgdatakit `ECGRecord` drawn as a paper page: what vendor ECG XML (`vendor_xml`) and SCP-ECG (`scp_ecg`) share.

`parse_record` hands the bytes to ecgdatakit through an anonymous in-memory file (memfd; a temporary file where
there is none), drops its warnings (they may quote the file), and turns each of its failures into a reason.
`record_page` draws the rhythm recording, never the median or reference beat: the first 10 s of I, II, III,
aVR, aVL, aVF, V1-V6 in millivolts at the stored sampling rate (nothing resampled), by
`ingest.render.render_paper` in the same style as a DICOM waveform. A file that stores only I, II and V1-V6
(MUSE's usual 8) gets the limb leads computed from I and II, listed in `derived_leads`; fewer leads than those
eight is `not_ecg`. The page's metadata: vendor_format, sampling_frequency, vendor_measurements,
vendor_statements, derived_leads and the identifiers (patient_id, accession_number, acquisition_time,
manufacturer, device_model) where the record has them.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

import numpy as np

from ingest.decode.dicom import working_style
from ingest.decode.limits import DecodeLimits
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.render import PAGE_SECONDS, STANDARD_LEADS, render_paper
from ingest.sniff import FileType

STORED_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")  # what every 12-lead file must hold
LIMB_FROM_I_II = {  # Einthoven and Goldberger
    "III": lambda i, ii: ii - i,
    "aVR": lambda i, ii: -(i + ii) / 2,
    "aVL": lambda i, ii: i - ii / 2,
    "aVF": lambda i, ii: ii - i / 2,
}
_MAX_ABS_MV = 100.0  # far off the page; keeps the drawing's pixel arithmetic finite on corrupt values
_MEASUREMENTS = {"heart_rate": "heart_rate_bpm", "rr_interval": "rr_ms", "pr_interval": "pr_ms",
                 "qrs_duration": "qrs_ms", "qt_interval": "qt_ms", "p_axis": "p_axis_deg",
                 "qrs_axis": "qrs_axis_deg", "t_axis": "t_axis_deg"}
_QTC_ANNOTATIONS = ("QTCorrected", "MDC_ECG_TIME_PD_QTc", "MDC_ECG_TIME_PD_QTc_GL", "qtc")
# Everything ecgdatakit's parsers were seen to raise on malformed content besides its own errors.
_MALFORMED = (ValueError, KeyError, TypeError, IndexError, AttributeError, ZeroDivisionError, struct.error,
              UnicodeError, OverflowError, ExpatError, ET.ParseError)


def parser_for(file_type: FileType) -> Any:
    """ecgdatakit's parser of a vendor XML or SCP-ECG file type."""
    if file_type is FileType.GE_MUSE:
        from ecgdatakit.parsing.parsers.ge_muse_xml import GEMuseXMLParser

        return GEMuseXMLParser()
    if file_type is FileType.PHILIPS:
        from ecgdatakit.parsing.parsers.sierra_xml import SierraXMLParser

        return SierraXMLParser()
    if file_type is FileType.SCP_ECG:
        from ecgdatakit.parsing.parsers.scp_ecg import SCPECGParser

        return SCPECGParser()
    from ecgdatakit.parsing.parsers.hl7_aecg import HL7aECGParser

    return HL7aECGParser()


@contextmanager
def _readable_path(data: bytes) -> Iterator[Path]:
    """A path ecgdatakit can read `data` from: an anonymous in-memory file where Linux has them, so no copy of
    the document (patient identifiers included) is left on a disk or in /dev/shm if the decoder is killed;
    a private temporary file elsewhere."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fd = os.memfd_create("ecg-intake-record", os.MFD_CLOEXEC)
        try:
            view, written = memoryview(data), 0
            while written < len(data):
                written += os.write(fd, view[written:])
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        yield Path(handle.name)


def parse_record(data: bytes, file_type: FileType) -> Any:
    """ecgdatakit's record of the (normalised) bytes; every failure becomes a reason."""
    from ecgdatakit.exceptions import CorruptedFileError, ECGDataKitError, MissingElementError, UnsupportedFormatError

    parser = parser_for(file_type)
    with _readable_path(data) as path:

        def clean(exc: BaseException) -> str:
            return str(exc).replace(str(path), "the file")[:200]

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ecgdatakit's warnings may quote the file's contents
                with np.errstate(all="ignore"):
                    return parser.parse(path)
        except UnsupportedFormatError as exc:
            raise IngestError(Reason.UNSUPPORTED_TYPE, f"{file_type.value}: {clean(exc)}") from None
        except MissingElementError as exc:
            raise IngestError(Reason.CORRUPT, f"{file_type.value}: missing element {clean(exc)}") from None
        except CorruptedFileError as exc:
            message = clean(exc)
            if message.startswith(("No rhythm", "No ECG lead sequence")):
                raise IngestError(Reason.NOT_ECG, f"{file_type.value}: {message}") from None
            raise IngestError(Reason.CORRUPT, f"{file_type.value}: {message}") from None
        except (ECGDataKitError, *_MALFORMED) as exc:
            raise IngestError(Reason.CORRUPT, f"{file_type.value}: malformed content "
                                              f"({type(exc).__name__}: {clean(exc)})") from None
        except MemoryError:
            raise IngestError(Reason.TOO_LARGE, f"{file_type.value}: the waveform does not fit in memory") from None
        except RecursionError:
            raise IngestError(Reason.TOO_LARGE, f"{file_type.value}: nested too deeply") from None


def _millivolts(lead: Any) -> np.ndarray:
    from ecgdatakit.exceptions import RawSamplesError

    try:
        physical = lead.to_physical().convert_units("mV")
    except RawSamplesError:
        raise IngestError(Reason.CORRUPT, f"lead {lead.label} has no amplitude unit: it cannot be drawn at "
                                          "10 mm/mV") from None
    except ValueError as exc:
        raise IngestError(Reason.CORRUPT, f"lead {lead.label}: {str(exc)[:160]}") from None
    with np.errstate(all="ignore"):
        values = np.nan_to_num(np.asarray(physical.samples, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(values, -_MAX_ABS_MV, _MAX_ABS_MV)


def _sampling_frequency(record: Any, leads: list[Any]) -> float:
    rates = {int(lead.sampling_rate) for lead in leads}
    if len(rates) != 1:
        raise IngestError(Reason.CORRUPT, f"the leads are stored at different sampling rates {sorted(rates)}")
    exact = (record.raw_metadata.get("rhythm_time") or {}).get("sampling_rate_exact")
    interval_us = record.raw_metadata.get("rhythm_sample_interval_us")  # SCP-ECG: the rate is 1e6 / interval
    if not exact and isinstance(interval_us, int) and interval_us > 0:
        exact = 1_000_000 / interval_us
    fs = float(exact) if exact else float(rates.pop())
    if not np.isfinite(fs) or fs <= 0:
        raise IngestError(Reason.CORRUPT, "the waveform has no usable sampling rate")
    if fs < 50 or fs > 20_000:
        raise IngestError(Reason.CORRUPT, f"a sampling rate of {fs:g} Hz is not an ECG's")
    return fs


def twelve_leads(record: Any, limits: DecodeLimits) -> tuple[np.ndarray, float, list[str]]:
    """(12 x n millivolts in STANDARD_LEADS order, fs, derived lead names) from the record's rhythm leads."""
    by_name: dict[str, Any] = {}
    for lead in record.leads:  # the rhythm recording; record.median_beats is never drawn
        by_name.setdefault(lead.label, lead)
    missing = [name for name in STORED_LEADS if name not in by_name]
    if missing:
        raise IngestError(Reason.NOT_ECG, f"the rhythm waveform lacks lead{'s' if len(missing) > 1 else ''} "
                                          f"{', '.join(missing)} (I, II and V1-V6 are needed)")
    stored = [name for name in STANDARD_LEADS if name in by_name]
    leads = [by_name[name] for name in stored]
    limits.check_waveform(len(record.leads), max(len(lead.samples) for lead in record.leads))
    fs = _sampling_frequency(record, leads)
    length = min(len(lead.samples) for lead in leads)
    if length < 2:
        raise IngestError(Reason.NOT_ECG, "the rhythm waveform holds no samples")
    keep = min(length, round(PAGE_SECONDS * fs))
    signals = {name: _millivolts(lead)[:keep] for name, lead in zip(stored, leads, strict=True)}
    derived = [name for name in STANDARD_LEADS if name not in signals]
    for name in derived:
        signals[name] = LIMB_FROM_I_II[name](signals["I"], signals["II"])
    return np.stack([signals[name] for name in STANDARD_LEADS]), fs, derived


def _number(text: Any) -> float | None:
    try:
        value = float(str(text).split()[0].replace(",", "."))
    except (ValueError, IndexError):
        return None
    return value if np.isfinite(value) else None


def _measurements(record: Any) -> dict[str, float]:
    found: dict[str, float] = {}
    measured = record.measurements
    for name, key in _MEASUREMENTS.items():
        value = getattr(measured, name, None)
        if value is not None:
            found[key] = value
    qtc = measured.qtc_bazett
    for name in _QTC_ANNOTATIONS:
        if qtc is None and name in record.annotations:
            qtc = _number(record.annotations[name])
    if qtc is None:
        qtc = measured.qtc_fridericia
    if qtc is not None:
        found["qtc_ms"] = qtc
    return found


def _statements(record: Any) -> list[str]:
    lines = []
    for statement in record.interpretation.statements:
        left, right = (statement, "") if isinstance(statement, str) else (statement[0], statement[1])
        text = " ".join(part.strip() for part in (left, right) if part and part.strip())
        if text:
            lines.append(text)
    return lines


def _accession(record: Any) -> str:
    for key in ("order", "order_info"):
        order = record.raw_metadata.get(key)
        if isinstance(order, dict):
            for name, value in order.items():
                if "accession" in str(name).lower() and isinstance(value, str | int) and str(value).strip():
                    return str(value).strip()
    return ""


def _identifiers(record: Any) -> dict[str, str]:
    """The same keys as a DICOM's identifiers; they go to the database only, never into a log line."""
    device = record.recording.device
    found = {"patient_id": record.patient.patient_id, "accession_number": _accession(record),
             "acquisition_time": record.recording.date.isoformat() if record.recording.date else "",
             "manufacturer": device.manufacturer, "device_model": device.model}
    return {key: str(value) for key, value in found.items() if value}


def record_page(record: Any, file_type: FileType, limits: DecodeLimits, working_copy: bool,
                measurements: dict[str, float] | None = None) -> Page:
    """The page of an ecgdatakit record's rhythm leads with its metadata (vendor XML and SCP-ECG alike);
    `measurements` adds to (never overrides) what the record's own measurements give."""
    signals, fs, derived = twelve_leads(record, limits)
    image = render_paper(signals, fs, list(STANDARD_LEADS), working_style() if working_copy else None)
    metadata: dict[str, Any] = {"vendor_format": file_type.value, "sampling_frequency": fs,
                                "vendor_measurements": {**(measurements or {}), **_measurements(record)},
                                "vendor_statements": _statements(record), "derived_leads": derived,
                                **_identifiers(record)}
    return Page(image=image, page_no=1, source=file_type.value, metadata=metadata, signals=signals)
