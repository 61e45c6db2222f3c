"""Vendor ECG XML (GE MUSE, Philips Sierra/PhilipsECG, HL7 aECG) drawn as a paper page, like a DICOM waveform.

Parsing is ecgdatakit's (Apache-2.0): `GEMuseXMLParser`, `SierraXMLParser` and `HL7aECGParser` parse with
defusedxml, read MUSE rhythm and median waveforms apart, Philips XLI compression (III, aVR, aVL, aVF
rebuilt from I and II) and aECG rhythm against representative-beat series. Refused: sierraecg (Philips
only, reads from a file name, versions 1.03 to 1.04.02 only), muse2wfdb (a converter writing WFDB files
through wfdb, UTF-8 only, no defusedxml, logs the file path) and aecg (needs Python 3.12 or newer).

Before ecgdatakit sees a byte, `xml_safety` decodes the document (BOM, declared or lying encoding) to
UTF-8 and runs one expat pass: entity declarations, nesting past `max_xml_depth`, early ends, malformed
markup and waveforms past `max_waveform_samples` (counted from the headers and the raw text, before any
Base64 or digit list is decoded) are refused there. ecgdatakit reads from a path, so the normalised bytes
go to an anonymous in-memory file (memfd; a temporary file where there is none); its warnings are caught
and dropped (they may quote the file), it logs nothing. The record -> page half (`waveform_record`) is shared
with SCP-ECG (`scp_ecg`).

The page is the rhythm recording, never the median beat: the first 10 s of I, II, III, aVR, aVL, aVF,
V1-V6 in millivolts at the stored sampling rate (nothing resampled), drawn by `ingest.render.render_paper`
in the same style as a DICOM waveform. A file that stores only I, II and V1-V6 (MUSE's usual 8) gets the
limb leads computed from I and II, listed in `derived_leads`; fewer leads than those eight is `not_ecg`.
"""


from __future__ import annotations

from ingest.decode import waveform_record
from ingest.decode.limits import DecodeLimits
from ingest.decode.xml_safety import normalise, prepass
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.sniff import FileType


def decode_vendor_xml(data: bytes, file_type: FileType, limits: DecodeLimits | None = None,
                      working_copy: bool = False) -> list[Page]:
    """One page: the rhythm recording of a MUSE, Philips or aECG file, drawn as paper."""
    limits = limits or DecodeLimits()
    normalised = normalise(data)
    limits.check_file_size(len(normalised))  # UTF-16 shrinks; a lying encoding may grow a little
    counts = prepass(normalised, limits)
    if not counts.waveforms:
        raise IngestError(Reason.NOT_ECG, f"{file_type.value}: the document holds no waveform")
    record = waveform_record.parse_record(normalised, file_type)
    return [waveform_record.record_page(record, file_type, limits, working_copy)]
