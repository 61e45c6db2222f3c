"""SCP-ECG (EN 1064) through the intake path: sniffed by section 0's header, refused when hostile or cut, a wrong
CRC refused rather than drawn, limits held before ecgdatakit allocates, Huffman-coded rhythm data read.

The good records come from `model_training.synth.scp_out.write_scp`; hostile ones are edits of it with the CRCs
made right again (`refresh_crcs`) wherever the test is about something other than the CRC.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ingest.decode import DecodeLimits, decode_bytes, waveform_record
from ingest.reasons import IngestError, Reason
from ingest.render import STANDARD_LEADS
from ingest.sniff import FileType, is_scp_ecg, sniff_bytes
from model_training.synth import scp_out
from model_training.synth.scp_out import crc_ccitt, refresh_crcs, write_scp
from model_training.synth.signals import generate_record

PATIENT = "PT-SCP-0042"


@pytest.fixture(scope="module")
def record():
    return generate_record(7)


@pytest.fixture(scope="module")
def scp(record) -> bytes:
    return write_scp(record.signals, record.fs, statements=["Sinus rhythm"], patient_id=PATIENT)


def _reason(data: bytes, limits: DecodeLimits | None = None) -> IngestError:
    with pytest.raises(IngestError) as caught:
        decode_bytes(data, limits)
    assert PATIENT not in caught.value.message
    return caught.value


def _sections(data: bytes) -> dict[int, tuple[int, int]]:
    """Section ID -> (offset, length) from section 0's pointers."""
    length = struct.unpack_from("<I", data, 10)[0]
    found = {}
    for position in range(22, 6 + length - 9, 10):
        section_id, size, index = struct.unpack_from("<HII", data, position)
        if size:
            found[section_id] = (index - 1, size)
    return found


def _edit(data: bytes, section_id: int, at: int, value: bytes) -> bytes:
    """`value` written `at` bytes into the body of section `section_id`, every CRC made right again."""
    offset = _sections(data)[section_id][0] + 16 + at
    return refresh_crcs(data[:offset] + value + data[offset + len(value):])


def test_sniffed_by_section_zero_never_by_name_and_nothing_else_looks_like_it(scp: bytes) -> None:
    assert sniff_bytes(scp[:16384]) is FileType.SCP_ECG
    no_tag = scp[:16] + bytes(6) + scp[22:]  # a writer that leaves the reserved bytes empty: the pointer decides
    assert is_scp_ecg(no_tag) and sniff_bytes(no_tag) is FileType.SCP_ECG
    for crc in (b"BM", b"%P", b"\x89P", b"\xff\xd8"):  # a CRC that happens to read like another format's magic
        assert sniff_bytes(crc + scp[2:64]) is FileType.SCP_ECG
    assert not is_scp_ecg(scp[:31])
    bad_length = bytearray(scp[:64])
    struct.pack_into("<I", bad_length, 10, 137)  # not 16 + whole 10-byte pointers
    assert not is_scp_ecg(bytes(bad_length))
    small_record = bytearray(scp[:64])
    struct.pack_into("<I", small_record, 2, 100)  # a record smaller than its own section 0
    assert not is_scp_ecg(bytes(small_record))
    rng = np.random.default_rng(5)
    assert sum(is_scp_ecg(rng.bytes(64)) for _ in range(20_000)) == 0


def test_the_page_and_its_metadata(scp: bytes, record) -> None:
    file_type, (page,) = decode_bytes(scp)
    assert file_type is FileType.SCP_ECG and page.source == "scp-ecg"
    meta = page.metadata
    assert meta["vendor_format"] == "scp-ecg" and meta["sampling_frequency"] == 500.0
    assert meta["patient_id"] == PATIENT and meta["acquisition_time"] == "2024-01-01T12:00:00"
    assert meta["vendor_statements"] == ["Sinus rhythm"] and meta["derived_leads"] == []
    assert (meta["manufacturer"], meta["device_model"]) == ("ecg-intake", "synth")
    measured = meta["vendor_measurements"]  # PR, QRS, QT from section 7's wave boundaries
    assert {"heart_rate_bpm", "rr_ms", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "qrs_axis_deg"} <= set(measured)


def _huffman(values: np.ndarray) -> bytes:
    """SCP-ECG's default Huffman table: 0 -> '0'; |v| <= 8 -> |v| ones, '0', the sign; else an 8- or 16-bit
    escape."""
    bits = []
    for value in values.tolist():
        if value == 0:
            bits.append("0")
        elif abs(value) <= 8:
            bits.append("1" * abs(value) + "0" + ("1" if value < 0 else "0"))
        elif -128 <= value <= 127:
            bits.append("1111111110" + format(value & 0xFF, "08b"))
        else:
            bits.append("1111111111" + format(value & 0xFFFF, "016b"))
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


def _huffman_record(data: bytes) -> bytes:
    """`data`'s section 6 re-encoded as second differences under the default Huffman table (section 2: 19999)."""
    sections = _sections(data)
    offset, length = sections[6]
    body = data[offset + 16: offset + length]
    leads = len(STANDARD_LEADS)
    sizes = struct.unpack_from(f"<{leads}H", body, 6)
    samples = np.frombuffer(body[6 + 2 * leads: 6 + 2 * leads + sum(sizes)], dtype="<i2").astype(np.int64)
    chunks = []
    for lead in samples.reshape(leads, -1):
        second = lead.copy()
        second[2:] = lead[2:] - 2 * lead[1:-1] + lead[:-2]
        chunks.append(_huffman(second))
    new6 = body[:4] + bytes([2, 0]) + struct.pack(f"<{leads}H", *map(len, chunks)) + b"".join(chunks)
    section2 = struct.pack("<H", 19999)
    rebuilt = {}
    for section_id, (start, size) in sections.items():
        if section_id not in (0, 6):
            rebuilt[section_id] = data[start + 16: start + size]
    rebuilt[2], rebuilt[6] = section2, new6
    return scp_out._record({i: scp_out._section(i, b) for i, b in sorted(rebuilt.items())})


def test_huffman_coded_second_differences_draw_the_same_page(scp: bytes) -> None:
    huffman = _huffman_record(scp)
    assert len(huffman) < len(scp) / 2
    _, (plain,) = decode_bytes(scp)
    huffman_type, (coded,) = decode_bytes(huffman)
    assert huffman_type is FileType.SCP_ECG
    assert np.array_equal(plain.image, coded.image) and plain.metadata == coded.metadata


def test_a_cut_record_is_truncated(scp: bytes) -> None:
    for cut in (40, 300, len(scp) // 2, len(scp) - 1):
        error = _reason(scp[:cut])
        assert error.reason is Reason.TRUNCATED and "declares" in error.message, (cut, error)


@pytest.mark.parametrize("section_id", [0, 1, 3, 6, 8])
def test_a_wrong_section_crc_is_corrupt_not_drawn(scp: bytes, section_id: int) -> None:
    """ecgdatakit only warns (ChecksumWarning) and decodes what it finds: a flipped bit in the rhythm data would
    be drawn as a plausible, false waveform. A wrong CRC is refused."""
    offset, length = _sections(scp)[section_id]
    flipped = bytearray(scp)
    flipped[offset + length - 3] ^= 0x10  # inside the section, away from its header
    fixed_record = bytearray(flipped)
    struct.pack_into("<H", fixed_record, 0, crc_ccitt(bytes(fixed_record[2:])))  # only the section's CRC is wrong
    for data in (bytes(flipped), bytes(fixed_record)):
        error = _reason(data)
        assert error.reason is Reason.CORRUPT and "CRC mismatch in" in error.message, error
        assert f"section {section_id}" in error.message, error


def test_a_wrong_record_crc_alone_is_corrupt(scp: bytes) -> None:
    error = _reason(bytes([scp[0] ^ 1]) + scp[1:])
    assert error.reason is Reason.CORRUPT and "CRC mismatch in the record" in error.message


def test_a_huge_declared_waveform_is_too_large_before_ecgdatakit(scp: bytes,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object) -> None:
        raise AssertionError("ecgdatakit was reached")

    monkeypatch.setattr(waveform_record, "parse_record", never)
    huge = _edit(scp, 3, 2 + 4, struct.pack("<I", 2**32 - 1))  # lead 1 ends at sample 4 294 967 295
    error = _reason(huge)
    assert error.reason is Reason.TOO_LARGE and "12 channels x 4294967295 samples" in error.message, error
    error = _reason(scp, DecodeLimits(max_waveform_samples=12 * 5000 - 1))
    assert error.reason is Reason.TOO_LARGE and "channels" in error.message
    error = _reason(scp, DecodeLimits(max_file_bytes=len(scp) - 1))
    assert error.reason is Reason.TOO_LARGE and "MiB" in error.message


def test_variants_ecgdatakit_cannot_read_are_unsupported_with_its_reason(scp: bytes) -> None:
    bimodal = _edit(scp, 6, 5, b"\x01")  # decimated rhythm data (SCP-ECG before 3.0)
    error = _reason(bimodal)
    assert error.reason is Reason.UNSUPPORTED_TYPE and "bimodal" in error.message, error
    long_term = bytearray(scp)  # section 6's pointer made a section 12 (SCP-ECG 3.0 long-term rhythm data)
    position = next(p for p in range(22, 142, 10) if struct.unpack_from("<H", scp, p)[0] == 6)
    struct.pack_into("<H", long_term, position, 12)
    error = _reason(refresh_crcs(bytes(long_term)))
    assert error.reason is Reason.UNSUPPORTED_TYPE and "section 12" in error.message, error


@pytest.mark.parametrize(("section_id", "at", "value", "reason", "words"), [
    (6, 0, struct.pack("<H", 0), Reason.CORRUPT, "amplitude unit"),  # AVM 0: raw counts cannot be drawn in mV
    (6, 2, struct.pack("<H", 0), Reason.CORRUPT, "sample interval is 0"),
    (6, 4, b"\x07", Reason.CORRUPT, "difference encoding"),
    (6, 6, struct.pack("<H", 65534), Reason.CORRUPT, "exceeds the section"),
    (3, 0, b"\x00", Reason.CORRUPT, "no leads"),
    (3, 0, b"\xff", Reason.CORRUPT, "declares 255 leads"),
    (3, 2, struct.pack("<I", 0), Reason.CORRUPT, "sample range"),
    (3, 10, b"\x00", Reason.NOT_ECG, "lacks lead I"),  # lead 1's code: unspecified
])
def test_malformed_content_gets_its_reason(scp: bytes, section_id: int, at: int, value: bytes, reason: Reason,
                                           words: str) -> None:
    error = _reason(_edit(scp, section_id, at, value))
    assert error.reason is reason and words in error.message, error


def test_pointers_that_do_not_add_up(scp: bytes) -> None:
    outside = bytearray(scp)
    position = next(p for p in range(22, 142, 10) if struct.unpack_from("<H", scp, p)[0] == 6)
    struct.pack_into("<I", outside, position + 6, len(scp))  # section 6 starting at the record's last byte
    error = _reason(refresh_crcs(bytes(outside)))
    assert error.reason is Reason.CORRUPT and "outside" in error.message, error
    wrong_id = bytearray(scp)
    struct.pack_into("<H", wrong_id, _sections(scp)[6][0] + 2, 5)
    error = _reason(refresh_crcs(bytes(wrong_id)))
    assert error.reason is Reason.CORRUPT and "header says 5" in error.message, error
    no_rhythm = bytearray(scp)
    struct.pack_into("<I", no_rhythm, position + 2, 0)  # section 6's pointer: length 0, absent
    error = _reason(refresh_crcs(bytes(no_rhythm)))
    assert error.reason is Reason.NOT_ECG and "section 6" in error.message, error


def test_random_bytes_behind_an_scp_header_get_a_reason(scp: bytes) -> None:
    rng = np.random.default_rng(11)
    head = scp[:6 + 136]
    outcomes = set()
    for i in range(200):
        tail = rng.bytes(int(rng.integers(1, 3000)))
        data = bytearray(head + tail)
        if i % 2:
            struct.pack_into("<I", data, 2, len(data))  # a record size that fits: the pointers are what is wrong
        if i % 4 == 1:
            data = bytearray(refresh_crcs(bytes(data)))
        assert sniff_bytes(bytes(data[:16384])) is FileType.SCP_ECG
        error = _reason(bytes(data))
        outcomes.add(error.reason)
    assert outcomes <= {Reason.TRUNCATED, Reason.CORRUPT, Reason.NOT_ECG, Reason.UNSUPPORTED_TYPE}
    assert {Reason.TRUNCATED, Reason.CORRUPT} <= outcomes
