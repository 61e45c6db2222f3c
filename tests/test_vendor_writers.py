"""Vendor XML fixtures (GE MUSE, Philips SierraECG, HL7 aECG) and SCP-ECG records read back by an independent
reader, ecgdatakit.

Each writer's bytes go through ecgdatakit's own parsers and must give back the synthetic samples within the
format's quantisation: MUSE 4.88 uV per bit, Philips 5 uV per count, aECG 2.5 uV per digit, SCP-ECG 5 uV per
count (half a step each).
"""

from __future__ import annotations

import base64
import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from ecgdatakit.parsing.codecs.xli import xli_decode
from ecgdatakit.parsing.parser import FileParser
from ecgdatakit.parsing.parsers.ge_muse_xml import GEMuseXMLParser
from ecgdatakit.parsing.parsers.hl7_aecg import HL7aECGParser
from ecgdatakit.parsing.parsers.scp_ecg import SCPECGParser
from ecgdatakit.parsing.parsers.sierra_xml import SierraXMLParser

from ingest.render import STANDARD_LEADS
from model_training.synth.dataset import FORMATS, VENDOR_FORMATS, item_seed
from model_training.synth.scp_out import SCP_NV_PER_COUNT, write_scp
from model_training.synth.signals import generate_record
from model_training.synth.vendor_out import (
    AECG_UV_PER_DIGIT,
    EIGHT_LEADS,
    MUSE_UV_PER_BIT,
    PHILIPS_UV_PER_COUNT,
    write_aecg,
    write_muse,
    write_philips,
)
from model_training.synth.xli import xli_encode
from tests.helpers.cli import Cli

MEASUREMENTS = {"heart_rate_bpm": 72, "pr_ms": 160, "qrs_ms": 90, "qt_ms": 380, "qtc_ms": 410, "p_axis_deg": 50,
                "qrs_axis_deg": 30, "t_axis_deg": 40}
STATEMENTS = ["Sinus rhythm", "Normal ECG"]


@pytest.fixture(scope="module")
def record():
    return generate_record(11)


def _parse(tmp_path: Path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return FileParser.parse(path)  # auto-detected, scaled to mV


def _leads(parsed) -> dict[str, np.ndarray]:
    return {lead.label: lead.samples for lead in parsed.leads}


def _assert_leads_match(leads: dict[str, np.ndarray], signals: np.ndarray, names, step_uv: float) -> None:
    assert list(leads) == list(names)
    for name in names:
        expected = signals[STANDARD_LEADS.index(name)]
        assert leads[name].shape == expected.shape, name
        np.testing.assert_allclose(leads[name], expected, atol=step_uv / 2000 + 1e-6, rtol=0, err_msg=name)


def _assert_median_beat(parsed, signals: np.ndarray, fs: int, names) -> None:
    beats = {beat.label: beat.samples for beat in parsed.median_beats}
    assert list(beats) == list(names)
    rhythm = _leads(parsed)
    for name in names:
        beat = beats[name]
        assert 0.9 * fs <= beat.size <= 1.3 * fs  # about one second, not the 10 s rhythm
        assert beat.size != rhythm[name].size and np.ptp(beat) > 0.1  # a real beat in mV, not a flat line
        starts = [rhythm[name][i : i + beat.size] for i in range(0, rhythm[name].size - beat.size, fs // 10)]
        assert min(np.abs(beat - s).max() for s in starts) > 1e-3  # not a slice copied from the rhythm


def _assert_measurements(parsed) -> None:
    m = parsed.measurements
    assert (m.heart_rate, m.pr_interval, m.qrs_duration, m.qt_interval) == (72, 160, 90, 380)
    assert (m.p_axis, m.qrs_axis, m.t_axis) == (50, 30, 40)
    assert [text for text, _ in parsed.interpretation.statements] == STATEMENTS


def test_muse_stores_eight_leads_a_median_and_a_rhythm(record, tmp_path: Path) -> None:
    data = write_muse(record.signals, record.fs, measurements=MEASUREMENTS, statements=STATEMENTS,
                      patient_id="P-42")
    assert data.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>') and b"<RestingECG>" in data
    parsed = _parse(tmp_path, "muse.xml", data)
    assert parsed.source_format == "ge_muse_xml" and parsed.patient.patient_id == "P-42"
    assert parsed.recording.acquisition.signal.sampling_rate == record.fs
    _assert_leads_match(_leads(parsed), record.signals, EIGHT_LEADS, MUSE_UV_PER_BIT)
    _assert_median_beat(parsed, record.signals, record.fs, EIGHT_LEADS)
    _assert_measurements(parsed)
    assert parsed.annotations["QTCorrected"] == "410"  # MUSE's QTc (formula unstated) stays an annotation
    raw = GEMuseXMLParser().parse(tmp_path / "muse.xml")  # the stored counts: int16 at 4.88 uV, CRC32 checked
    assert raw.raw_metadata["checksum_valid"] is True and raw.leads[0].resolution == MUSE_UV_PER_BIT
    assert np.array_equal(raw.leads[0].samples, np.round(raw.leads[0].samples))


def test_muse_twelve_leads_without_a_median(record, tmp_path: Path) -> None:
    parsed = _parse(tmp_path, "muse12.xml", write_muse(record.signals, record.fs, eight_leads=False,
                                                       median_beat=False))
    _assert_leads_match(_leads(parsed), record.signals, STANDARD_LEADS, MUSE_UV_PER_BIT)
    assert parsed.median_beats == []
    assert abs(parsed.measurements.heart_rate - record.params["heart_rate"]) < 0.1 * record.params["heart_rate"]


PHILIPS_VARIANTS = [  # (encoding, declared_encoding, compression)
    ("utf-16", None, "XLI"),
    ("utf-8", None, "XLI"),
    ("utf-8", "utf-16", "XLI"),
    ("utf-8", "windows-1252", "XLI"),
    ("utf-16", None, "Uncompressed"),
    ("utf-8", None, "Uncompressed"),
]


@pytest.mark.parametrize(("encoding", "declared", "compression"), PHILIPS_VARIANTS)
def test_philips_reads_back_in_every_encoding_and_compression(record, tmp_path: Path, encoding: str,
                                                              declared: str | None, compression: str) -> None:
    data = write_philips(record.signals, record.fs, encoding=encoding, declared_encoding=declared,
                         compression=compression, measurements=MEASUREMENTS, statements=STATEMENTS)
    if encoding == "utf-16":
        assert data.startswith(b"\xff\xfe")  # UTF-16 with a byte order mark, as PageWriter carts write
        assert data.decode("utf-16").startswith('<?xml version="1.0" encoding="UTF-16"')
    else:
        assert data.startswith(b"<?xml") and data.decode("utf-8")
        claimed = re.match(rb'<\?xml version="1.0" encoding="([^"]+)"', data).group(1).decode()
        assert claimed == (declared or "UTF-8")
    parsed = _parse(tmp_path, "philips.xml", data)
    assert parsed.source_format == "sierra_xml" and parsed.patient.patient_id == "SYNTH-0001"
    assert parsed.recording.acquisition.signal.compression == ("XLI" if compression == "XLI" else "")
    _assert_leads_match(_leads(parsed), record.signals, STANDARD_LEADS, PHILIPS_UV_PER_COUNT)
    _assert_median_beat(parsed, record.signals, record.fs, STANDARD_LEADS)
    _assert_measurements(parsed)


def test_philips_xli_stores_the_limb_leads_as_residuals(record) -> None:
    """As real carts do: III, aVR, aVL, aVF are what I and II do not predict, tiny next to the leads."""
    text = write_philips(record.signals, record.fs, encoding="utf-8").decode("utf-8")
    blob = re.search(r"<parsedwaveforms[^>]*>([^<]+)</parsedwaveforms>", text).group(1)
    chunks = xli_decode(base64.b64decode("".join(blob.split())))
    assert len(chunks) == 12
    counts = np.round(record.signals * 1000 / PHILIPS_UV_PER_COUNT)
    for index in range(2, 6):  # the synthetic limb leads are exact sums of I and II: residuals are rounding
        assert np.abs(chunks[index]).max() <= 2 < np.abs(counts[index]).max()
    for index in (0, 1, *range(6, 12)):
        assert np.array_equal(chunks[index], counts[index])


def test_xli_encoder_round_trips_through_the_reference_decoder() -> None:
    """Noise fills the LZW dictionary (codes up to 1022) and steep edges make large second differences."""
    rng = np.random.default_rng(3)
    leads = np.stack([rng.integers(-3000, 3000, 4000), np.cumsum(rng.integers(-40, 40, 4000)),
                      np.repeat([0, 5000, -5000, 0], 1000), np.zeros(4000, dtype=np.int64)])
    decoded = xli_decode(xli_encode(leads))
    assert [np.array_equal(d, lead) for d, lead in zip(decoded, leads, strict=True)] == [True] * 4


@pytest.mark.parametrize("fs", [500, 1000, 100])
def test_aecg_at_every_rate(tmp_path: Path, fs: int) -> None:
    record = generate_record(12, fs=fs)
    data = write_aecg(record.signals, fs, measurements=MEASUREMENTS, statements=STATEMENTS, patient_id="P-7")
    assert b'<AnnotatedECG xmlns="urn:hl7-org:v3"' in data
    assert f'<increment value="{1 / fs:g}" unit="s"/>'.encode() in data
    parsed = _parse(tmp_path, "aecg.xml", data)
    assert parsed.source_format == "hl7_aecg" and parsed.patient.patient_id == "P-7"
    assert parsed.leads[0].sampling_rate == fs and parsed.recording.duration.total_seconds() == pytest.approx(10)
    _assert_leads_match(_leads(parsed), record.signals, STANDARD_LEADS, AECG_UV_PER_DIGIT)
    _assert_median_beat(parsed, record.signals, fs, STANDARD_LEADS)
    _assert_measurements(parsed)
    raw = HL7aECGParser().parse(tmp_path / "aecg.xml")
    assert raw.leads[0].resolution == AECG_UV_PER_DIGIT and raw.leads[0].resolution_unit == "uV"


def test_aecg_without_median_beat_or_annotations(record, tmp_path: Path) -> None:
    parsed = _parse(tmp_path, "plain.xml", write_aecg(record.signals, record.fs, median_beat=False,
                                                      measurements={}))
    assert parsed.median_beats == [] and parsed.interpretation.statements == []
    assert parsed.measurements.heart_rate is None


def test_scp_reads_back_with_every_section_crc_right(record, tmp_path: Path) -> None:
    data = write_scp(record.signals, record.fs, measurements=MEASUREMENTS, statements=STATEMENTS, patient_id="P-9")
    assert data[16:22] == b"SCPECG" and int.from_bytes(data[2:6], "little") == len(data)
    assert SCPECGParser.can_parse(tmp_path / "x.scp", data[:4096])
    parsed = _parse(tmp_path, "record.scp", data)
    assert parsed.source_format == "scp_ecg" and parsed.patient.patient_id == "P-9"
    assert parsed.recording.date.isoformat() == "2024-01-01T12:00:00"
    _assert_leads_match(_leads(parsed), record.signals, STANDARD_LEADS, SCP_NV_PER_COUNT / 1000)
    assert parsed.median_beats == []  # no reference beat: the rhythm is all there is
    m = parsed.measurements
    assert (m.heart_rate, m.rr_interval, m.qtc_bazett) == (72, 833, 410)
    assert (m.p_axis, m.qrs_axis, m.t_axis) == (50, 30, 40)
    assert [text for text, _ in parsed.interpretation.statements] == STATEMENTS
    raw = SCPECGParser().parse(tmp_path / "record.scp")  # the stored counts: 16-bit at 5000 nV, every CRC right
    assert raw.raw_metadata["checksum_valid"] is True and raw.raw_metadata["sections_found"] == [0, 1, 3, 6, 7, 8]
    assert raw.raw_metadata["rhythm_avm_nv"] == SCP_NV_PER_COUNT
    assert raw.raw_metadata["rhythm_sample_interval_us"] == round(1e6 / record.fs)
    signal = raw.recording.acquisition.signal
    assert (signal.compression, signal.data_encoding, signal.bits_per_sample) == ("none", "amplitudes", 16)
    block = raw.raw_metadata["measurement_blocks"][0]  # section 7 stores boundaries: PR, QRS, QT as written
    assert (block["qrs_onset"] - block["p_onset"], block["qrs_offset"] - block["qrs_onset"],
            block["t_offset"] - block["qrs_onset"]) == (160, 90, 380)


def test_scp_without_measurements_or_statements_and_its_rate_limits(record, tmp_path: Path) -> None:
    parsed = _parse(tmp_path, "plain.scp", write_scp(record.signals, record.fs, measurements={}))
    assert parsed.interpretation.statements == [] and parsed.measurements.heart_rate is None
    assert SCPECGParser().parse(tmp_path / "plain.scp").raw_metadata["sections_found"] == [0, 1, 3, 6]
    with pytest.raises(ValueError, match="microseconds"):
        write_scp(record.signals, 300, measurements={})  # 3333.3 us per sample
    with pytest.raises(ValueError, match="32767"):
        write_scp(np.zeros((12, 40_000)), 1000, measurements={})


def test_writers_refuse_signals_that_are_not_twelve_leads(record) -> None:
    for writer in (write_muse, write_philips, write_aecg, write_scp):
        with pytest.raises(ValueError, match="12"):
            writer(record.signals[:8], record.fs)
    with pytest.raises(ValueError, match="unknown measurements"):
        write_muse(record.signals, record.fs, measurements={"hr": 60})


def test_synth_command_writes_vendor_xml(tmp_path: Path) -> None:
    assert set(VENDOR_FORMATS) <= set(FORMATS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    env["ECG_INTAKE_HOME"] = str(tmp_path / "home")
    out = tmp_path / "set"
    Cli(env, tmp_path)("synth", "--n", "2", "--out", str(out), "--formats", "muse,philips,aecg,scp", "--seed", "6",
                       "--workers", "1", "--dpi", "100", "--artifacts", "none")
    with open(out / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["file"], r["format"]) for r in rows) == sorted(
        (f"{i:06d}{VENDOR_FORMATS[f]}", f) for i in range(2) for f in VENDOR_FORMATS)
    readers = {"muse": GEMuseXMLParser, "philips": SierraXMLParser, "aecg": HL7aECGParser, "scp": SCPECGParser}
    for row in rows:
        assert readers[row["format"]].can_parse(out / row["file"], (out / row["file"]).read_bytes()[:4096])
        parsed = FileParser.parse(out / row["file"])
        signals = generate_record(item_seed(6, int(row["file"][:6]))).signals
        names = EIGHT_LEADS if row["format"] == "muse" else STANDARD_LEADS
        step = {"muse": MUSE_UV_PER_BIT, "philips": PHILIPS_UV_PER_COUNT, "aecg": AECG_UV_PER_DIGIT,
                "scp": SCP_NV_PER_COUNT / 1000}[row["format"]]
        _assert_leads_match(_leads(parsed), signals, names, step)
        assert parsed.patient.patient_id == f"SYN{row['seed']}"
