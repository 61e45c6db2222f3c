"""Write synthetic 12-lead signals as an SCP-ECG record (EN 1064 / ISO 11073-91064, protocol version 2.0).

Layout, all integers little-endian: a 6-byte preamble (CRC-CCITT of the rest of the record, record size), then
sections, each a 16-byte header (CRC-CCITT of the rest of the section, section ID, section length, section
version, protocol version, 6 reserved bytes: "SCPECG" in section 0) and a body padded to an even length:

- section 0: a pointer (ID, length, 1-based byte index) for each of sections 0-11, absent ones with length 0;
- section 1: patient ID (tag 2), last name (tag 0), the acquiring device (tag 14), acquisition date and time
  (tags 25, 26), the terminator (tag 255);
- section 3: twelve leads recorded simultaneously, each sample range 1..n, lead codes I, II, V1-V6, III, aVR,
  aVL, aVF;
- section 6: the rhythm data, uncompressed (no Huffman table, section 2 absent; no reference beat subtraction,
  sections 4 and 5 absent): the amplitude value multiplier in nV, the sample interval in us, then each lead
  as 16-bit samples;
- section 7: one measurement block (P onset/offset, QRS onset/offset, T offset in ms from the start of the
  reference beat, P/QRS/T axes), no pacemaker spikes, the ventricular rate and QTc (Bazett);
- section 8: the interpretation statements as text (machine, unconfirmed).
"""

from __future__ import annotations

import binascii
import math
import struct
from collections.abc import Iterable, Mapping

import numpy as np

from ingest.render import STANDARD_LEADS
from model_training.synth.vendor_out import ACQUIRED, check_signals, given_or_measured, to_counts

SCP_NV_PER_COUNT = 5000  # the amplitude value multiplier (AVM): 5 uV per count
PROTOCOL_VERSION = 20  # SCP-ECG 2.0
LEAD_CODES = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8, "III": 61, "aVR": 62,
              "aVL": 63, "aVF": 64}  # section 3 lead identification codes
UNDEFINED = 29999  # SCP-ECG's "not measured"
_P_ONSET_MS = 100  # where the measurement block puts the P wave in the reference beat


def crc_ccitt(data: bytes) -> int:
    """CRC-CCITT (polynomial 0x1021, initial value 0xFFFF), as every SCP-ECG checksum."""
    return binascii.crc_hqx(data, 0xFFFF)


def _section(section_id: int, body: bytes) -> bytes:
    if len(body) % 2:
        body += b"\x00"  # sections have an even length
    reserved = b"SCPECG" if section_id == 0 else bytes(6)
    rest = struct.pack("<HIBB", section_id, 16 + len(body), PROTOCOL_VERSION, PROTOCOL_VERSION) + reserved + body
    return struct.pack("<H", crc_ccitt(rest)) + rest


def _text(value: str) -> bytes:
    return value.encode("latin-1", errors="replace") + b"\x00"


def _tag(tag: int, value: bytes) -> bytes:
    return struct.pack("<BH", tag, len(value)) + value


def _device() -> bytes:
    """Tag 14, the acquiring device: 36 fixed bytes, then the analysing program, serial number, software,
    SCP implementation and manufacturer as NUL-terminated strings."""
    fixed = (struct.pack("<HHHBB", 1, 1, 1, 0, 255) + b"synth\x00" + bytes([PROTOCOL_VERSION, 0xA0, 0x00, 0x00, 1])
             + bytes(16))
    strings = [b"", b"SYNTH", b"ecg-intake synth", b"ecg-intake", b"ecg-intake"]
    return fixed + bytes([len(strings[0]) + 1]) + b"".join(s + b"\x00" for s in strings)


def _section1(patient_id: str) -> bytes:
    return b"".join([
        _tag(2, _text(patient_id)), _tag(0, _text("SYNTHETIC")), _tag(14, _device()),
        _tag(25, struct.pack("<HBB", ACQUIRED.year, ACQUIRED.month, ACQUIRED.day)),
        _tag(26, bytes([ACQUIRED.hour, ACQUIRED.minute, ACQUIRED.second])), _tag(255, b""),
    ])


def _section3(samples: int) -> bytes:
    flags = 0x04 | (len(STANDARD_LEADS) << 3)  # all leads simultaneous, 12 of them; no reference beat subtraction
    leads = b"".join(struct.pack("<IIB", 1, samples, LEAD_CODES[name]) for name in STANDARD_LEADS)
    return bytes([len(STANDARD_LEADS), flags]) + leads


def _section6(counts: np.ndarray, interval_us: int) -> bytes:
    sizes = struct.pack(f"<{len(counts)}H", *[2 * counts.shape[1]] * len(counts))
    header = struct.pack("<HHBB", SCP_NV_PER_COUNT, interval_us, 0, 0)  # amplitudes, not bimodal
    return header + sizes + counts.astype("<i2").tobytes()


def _u16(value: float | None) -> int:
    return UNDEFINED if value is None or not 0 <= value < UNDEFINED else round(value)


def _i16(value: float | None) -> int:
    return 999 if value is None or not -360 <= value <= 360 else round(value)  # 999: axis not defined


def _section7(values: Mapping[str, int], beats: int) -> bytes:
    rate = values.get("heart_rate_bpm")
    rr = 60000 / rate if rate else None
    pr, qrs, qt = values.get("pr_ms"), values.get("qrs_ms"), values.get("qt_ms")
    qrs_on = _P_ONSET_MS + pr if pr is not None else None
    block = struct.pack("<5H3h", _u16(_P_ONSET_MS if pr is not None else None),
                        _u16(_P_ONSET_MS + 0.6 * pr if pr is not None else None), _u16(qrs_on),
                        _u16(qrs_on + qrs if qrs_on is not None and qrs is not None else None),
                        _u16(qrs_on + qt if qrs_on is not None and qt is not None else None),
                        _i16(values.get("p_axis_deg")), _i16(values.get("qrs_axis_deg")),
                        _i16(values.get("t_axis_deg")))
    qtc = values.get("qtc_ms")
    return (struct.pack("<BBHH", 1, 0, _u16(rr), _u16(rr)) + block + struct.pack("<H", beats) + bytes(beats)
            + struct.pack("<HHHB", _u16(rate), _u16(rate), _u16(qtc), 1 if qtc is not None else 0))


def _section8(statements: list[str]) -> bytes:
    head = bytes([0]) + struct.pack("<HBB", ACQUIRED.year, ACQUIRED.month, ACQUIRED.day) + bytes(
        [ACQUIRED.hour, ACQUIRED.minute, ACQUIRED.second, len(statements)])
    return head + b"".join(bytes([i + 1]) + struct.pack("<H", len(_text(s))) + _text(s)
                           for i, s in enumerate(statements))


def _record(sections: dict[int, bytes]) -> bytes:
    """The preamble, section 0 pointing at `sections` (ID -> whole section), then the sections in ID order."""
    pointers = []
    section0_length = 16 + 10 * 12
    index = 6 + section0_length + 1  # 1-based byte position after the preamble and section 0
    for section_id in range(12):
        if section_id == 0:
            pointers.append(struct.pack("<HII", 0, section0_length, 7))
        elif section_id in sections:
            pointers.append(struct.pack("<HII", section_id, len(sections[section_id]), index))
            index += len(sections[section_id])
        else:
            pointers.append(struct.pack("<HII", section_id, 0, 0))
    body = _section(0, b"".join(pointers)) + b"".join(sections[i] for i in sorted(sections))
    rest = struct.pack("<I", 6 + len(body)) + body
    return struct.pack("<H", crc_ccitt(rest)) + rest


def write_scp(signals_mv: np.ndarray, fs: float, *, measurements: Mapping[str, float] | None = None,
              statements: Iterable[str] | None = None, patient_id: str = "SYNTH-0001") -> bytes:
    """An SCP-ECG record of the twelve leads: uncompressed 16-bit rhythm data (no Huffman table, section 2
    absent) at 5 uV per count, measurements in section 7 and statements in section 8 where there are any.

    `fs` must be a whole number of microseconds per sample apart (500 Hz: 2000 us) and a lead at most 32767
    samples long (a section 6 lead is at most 65535 bytes).
    """
    signals = check_signals(signals_mv, fs)
    interval = 1_000_000 / fs
    if not math.isclose(interval, round(interval), abs_tol=1e-9) or not 1 <= round(interval) <= 65535:
        raise ValueError(f"fs={fs:g} Hz is not a whole number of microseconds per sample")
    if signals.shape[1] > 32767:
        raise ValueError(f"{signals.shape[1]} samples per lead; section 6 holds at most 32767")
    values = given_or_measured(measurements, signals, fs)
    sections = {1: _section(1, _section1(patient_id)), 3: _section(3, _section3(signals.shape[1])),
                6: _section(6, _section6(to_counts(signals, SCP_NV_PER_COUNT / 1000), round(interval)))}
    if values:
        beats = round(values.get("heart_rate_bpm", 0) * signals.shape[1] / fs / 60)
        sections[7] = _section(7, _section7(values, min(beats, 255)))
    texts = [s for s in (statements or []) if s]
    if texts:
        sections[8] = _section(8, _section8(texts[:255]))
    return _record(sections)


def refresh_crcs(data: bytes) -> bytes:
    """`data` with the record's and every pointed-to section's CRC recomputed (to build hostile files that
    are wrong in one chosen way only)."""
    out = bytearray(data)
    section0_length = struct.unpack_from("<I", out, 10)[0]
    for position in range(22, 6 + section0_length - 9, 10):
        section_id, length, index = struct.unpack_from("<HII", out, position)
        if length and index and section_id <= 11 and index - 1 + length <= len(out):
            struct.pack_into("<H", out, index - 1, crc_ccitt(bytes(out[index + 1: index - 1 + length])))
    struct.pack_into("<H", out, 6, crc_ccitt(bytes(out[8: 6 + section0_length])))
    size = min(struct.unpack_from("<I", out, 2)[0], len(out))
    struct.pack_into("<H", out, 0, crc_ccitt(bytes(out[2:size])))
    return bytes(out)
