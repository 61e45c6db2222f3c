"""SCP-ECG (EN 1064 / ISO 11073-91064) drawn as a paper page, like a vendor XML or DICOM waveform.

Parsing is ecgdatakit's `SCPECGParser` (Apache-2.0): uncompressed and Huffman-coded rhythm data (the default
table or the file's own tables in section 2), first and second differences, reference beat subtraction
(sections 4 and 5 added back), section 1 demographics and device, section 7 global measurements, section 8
and 11 statements. It refuses bimodal compression (a rhythm decimated outside the QRS) and SCP-ECG 3.0
long-term rhythm data in section 12: those are `unsupported_type` with its words.

Before ecgdatakit sees a byte, a walk of our own over the binary header holds the limits: the record size
against the file (a cut file is `truncated`), section 0's pointers and each section's header ID (inconsistent
is `corrupt`), every CRC-CCITT (the record's and each of sections 0-11), then section 3's lead definitions
(leads x the longest sample range) and, for Huffman-coded reference beats, their declared length against
`max_waveform_samples` (`too_large` before anything is allocated). ecgdatakit only warns on a wrong CRC and
decodes the bytes as found; we refuse it as `corrupt`, since a flipped bit in section 6 would otherwise be drawn
as a plausible but false waveform (and one in section 3 would read as a waveform too large). The CRCs cost one
pass over bytes already held to `max_file_bytes`.

The page is the rhythm recording (section 6), never the reference beat (section 5); `waveform_record.record_page`
draws it and fills the same metadata keys as vendor XML, with "vendor_format": "scp-ecg". Section 7 stores
wave boundaries, not intervals: PR, QRS and QT are taken from the first measurement block's P onset, QRS
onset and offset and T offset where all are defined and in order.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field
from typing import Any

from ingest.decode import waveform_record
from ingest.decode.limits import DecodeLimits
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.sniff import FileType

_HEADER = 16  # every section's header: CRC, ID, length, section version, protocol version, 6 reserved bytes
_PREAMBLE = 6  # the record's CRC and size
_UNDEFINED = (29999, 0xFFFF)
_PLAUSIBLE_MS = 2000  # a wave boundary past 2 s into the reference beat is not a measurement
_FORMAT = FileType.SCP_ECG.value


def _crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)  # CRC-CCITT, initial value 0xFFFF


@dataclass
class Header:
    """What the walk found: the record size and each pointed-to section's (offset, length)."""

    record_size: int
    sections: dict[int, tuple[int, int]] = field(default_factory=dict)
    leads: int = 0
    samples: int = 0


def _body(data: bytes, section: tuple[int, int]) -> bytes:
    offset, length = section
    return data[offset + _HEADER: offset + length]


def walk(data: bytes, limits: DecodeLimits) -> Header:
    """The header walk that holds the limits and checks the CRCs before ecgdatakit decodes anything."""
    if len(data) < _PREAMBLE + _HEADER:
        raise IngestError(Reason.TRUNCATED, f"{_FORMAT}: {len(data)} bytes end before section 0's header")
    (record_size,) = struct.unpack_from("<I", data, 2)
    if record_size > len(data):
        raise IngestError(Reason.TRUNCATED, f"{_FORMAT}: the record declares {record_size} bytes but the file "
                                            f"holds {len(data)}")
    if record_size < _PREAMBLE + _HEADER:
        raise IngestError(Reason.CORRUPT, f"{_FORMAT}: a record size of {record_size} bytes cannot hold section 0")
    data = data[:record_size]
    section0_id, section0_length = struct.unpack_from("<HI", data, 8)
    if section0_id != 0 or section0_length < _HEADER or _PREAMBLE + section0_length > record_size:
        raise IngestError(Reason.CORRUPT, f"{_FORMAT}: section 0's length {section0_length} does not fit the "
                                          f"{record_size}-byte record")
    header = Header(record_size, {0: (_PREAMBLE, section0_length)})
    for position in range(_PREAMBLE + _HEADER, _PREAMBLE + section0_length - 9, 10):
        section_id, length, index = struct.unpack_from("<HII", data, position)
        if section_id == 0 or length == 0:
            continue
        if index == 0 or index - 1 + length > record_size:
            raise IngestError(Reason.CORRUPT, f"{_FORMAT}: section {section_id} ({length} bytes at byte {index}) "
                                              f"lies outside the {record_size}-byte record")
        if section_id > 11:  # manufacturer sections (and v3's section 12): headers vary, not checked
            header.sections[section_id] = (index - 1, length)
            continue
        if length < _HEADER:
            raise IngestError(Reason.CORRUPT, f"{_FORMAT}: section {section_id} is shorter than its header")
        found_id, found_length = struct.unpack_from("<HI", data, index - 1 + 2)
        if found_id != section_id:
            raise IngestError(Reason.CORRUPT, f"{_FORMAT}: section 0 points to section {section_id} but its header "
                                              f"says {found_id}")
        header.sections[section_id] = (index - 1, max(_HEADER, min(length, found_length)))
    _check_crcs(data, header)  # first: a flipped bit in section 3 is corrupt, not a waveform too large
    sections = header.sections
    if 6 not in sections:
        if 12 in sections:
            raise IngestError(Reason.UNSUPPORTED_TYPE, f"{_FORMAT}: long-term rhythm data (section 12, SCP-ECG "
                                                       "3.0) without section 6 is not supported")
        raise IngestError(Reason.NOT_ECG, f"{_FORMAT}: the record holds no rhythm data (section 6)")
    if 3 not in sections:
        raise IngestError(Reason.CORRUPT, f"{_FORMAT}: section 3 (lead definition) is missing")
    _check_leads(data, header, limits)
    return header


def _check_leads(data: bytes, header: Header, limits: DecodeLimits) -> None:
    """Section 3's lead count and sample ranges (and a Huffman reference beat's length) against the limit."""
    body = _body(data, header.sections[3])
    if len(body) < 2 or body[0] == 0:
        raise IngestError(Reason.CORRUPT, f"{_FORMAT}: section 3 defines no leads")
    count = body[0]
    if 2 + 9 * count > len(body):
        raise IngestError(Reason.CORRUPT, f"{_FORMAT}: section 3 declares {count} leads but holds "
                                          f"{(len(body) - 2) // 9}")
    longest = 0
    for lead in range(count):
        start, end = struct.unpack_from("<II", body, 2 + 9 * lead)
        if start < 1 or end < start:
            raise IngestError(Reason.CORRUPT, f"{_FORMAT}: lead {lead + 1} has the sample range {start}-{end}")
        longest = max(longest, end - start + 1)
    limits.check_waveform(count, longest)
    header.leads, header.samples = count, longest
    sections = header.sections
    if 2 in sections and 4 in sections and 5 in sections:  # Huffman-coded beats: the count comes from section 4
        beat, reference = _body(data, sections[4]), _body(data, sections[5])
        if len(beat) >= 2 and len(reference) >= 4:
            length_ms, interval_us = struct.unpack_from("<H", beat)[0], struct.unpack_from("<H", reference, 2)[0]
            if interval_us:
                limits.check_waveform(count, round(length_ms * 1000 / interval_us))


def _check_crcs(data: bytes, header: Header) -> None:
    bad = [] if _crc(data[2: header.record_size]) == struct.unpack_from("<H", data)[0] else ["the record"]
    for section_id, (offset, length) in sorted(header.sections.items()):
        if section_id <= 11 and _crc(data[offset + 2: offset + length]) != struct.unpack_from("<H", data, offset)[0]:
            bad.append(f"section {section_id}")
    if bad:
        raise IngestError(Reason.CORRUPT, f"{_FORMAT}: CRC mismatch in {', '.join(bad)}")


def _intervals(record: Any) -> dict[str, float]:
    """PR, QRS and QT from section 7's first measurement block (boundaries in ms), where all are defined."""
    blocks = record.raw_metadata.get("measurement_blocks") or []
    if not blocks:
        return {}
    block = blocks[0]

    def at(name: str) -> int | None:
        value = block.get(name)
        return value if isinstance(value, int) and value not in _UNDEFINED and value <= _PLAUSIBLE_MS else None

    p_on, qrs_on, qrs_off, t_off = at("p_onset"), at("qrs_onset"), at("qrs_offset"), at("t_offset")
    found: dict[str, float] = {}
    if p_on is not None and qrs_on is not None and p_on < qrs_on:
        found["pr_ms"] = qrs_on - p_on
    if qrs_on is not None and qrs_off is not None and qrs_on < qrs_off:
        found["qrs_ms"] = qrs_off - qrs_on
    if qrs_on is not None and t_off is not None and qrs_on < t_off:
        found["qt_ms"] = t_off - qrs_on
    return found


def decode_scp_ecg(data: bytes, limits: DecodeLimits | None = None, working_copy: bool = False) -> list[Page]:
    """One page: the rhythm recording of an SCP-ECG record, drawn as paper."""
    limits = limits or DecodeLimits()
    limits.check_file_size(len(data))
    header = walk(data, limits)
    record = waveform_record.parse_record(data[: header.record_size], FileType.SCP_ECG)
    if record.raw_metadata.get("checksum_valid") is False:  # the walk checked them; ecgdatakit agrees or not
        raise IngestError(Reason.CORRUPT, f"{_FORMAT}: CRC mismatch")
    return [waveform_record.record_page(record, FileType.SCP_ECG, limits, working_copy, _intervals(record))]
