"""Vendor ECG XML (GE MUSE, Philips, HL7 aECG) through the one intake path: sniffed by content, refused when
hostile, drawn from the rhythm recording like a DICOM waveform, and classified the same as the same recording
in any other format. The files come from `model_training.synth.vendor_out`, the writers `ecg-intake synth` uses;
SCP-ECG (`model_training.synth.scp_out`) runs through the same tests wherever they go over every writer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.decode import DecodeLimits, decode, decode_bytes, waveform_record
from ingest.decode.waveform_record import twelve_leads
from ingest.reasons import IngestError, Reason
from ingest.render import STANDARD_LEADS, render_paper
from ingest.sniff import FileType, sniff, sniff_bytes
from model_training.synth.scp_out import write_scp
from model_training.synth.signals import generate_record
from model_training.synth.vendor_out import write_aecg, write_muse, write_philips

PATIENT = "PT-7Q4Z-vendor"
# SCP-ECG is binary, not XML, but goes the same record -> page way: every test over WRITERS holds for it too
WRITERS = {FileType.GE_MUSE: write_muse, FileType.PHILIPS: write_philips, FileType.HL7_AECG: write_aecg,
           FileType.SCP_ECG: write_scp}
STATEMENTS = ["Sinus rhythm", "Normal ECG"]


@pytest.fixture(scope="module")
def record():
    return generate_record(7)


@pytest.fixture(scope="module")
def files(record) -> dict[FileType, bytes]:
    return {kind: writer(record.signals, record.fs, patient_id=PATIENT, statements=STATEMENTS)
            for kind, writer in WRITERS.items()}


def _reason(data: bytes, limits: DecodeLimits | None = None) -> IngestError:
    with pytest.raises(IngestError) as caught:
        decode_bytes(data, limits)
    return caught.value


def _ink_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels dark in one page and not in the other."""
    ink_a, ink_b = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY) < 100, cv2.cvtColor(b, cv2.COLOR_BGR2GRAY) < 100
    return float((ink_a ^ ink_b).sum() / max(1, (ink_a | ink_b).sum()))


@pytest.mark.parametrize("kind", list(WRITERS))
def test_each_format_decodes_to_one_page_with_its_metadata(files: dict[FileType, bytes], kind: FileType) -> None:
    file_type, pages = decode_bytes(files[kind])
    assert file_type is kind and len(pages) == 1
    page = pages[0]
    assert page.image.dtype == np.uint8 and page.image.ndim == 3 and page.page_no == 1
    meta = page.metadata
    assert set(meta) >= {"vendor_format", "sampling_frequency", "vendor_measurements", "vendor_statements",
                         "derived_leads", "patient_id"}
    assert set(meta) <= {"vendor_format", "sampling_frequency", "vendor_measurements", "vendor_statements",
                         "derived_leads", "patient_id", "accession_number", "acquisition_time", "manufacturer",
                         "device_model"}
    assert meta["vendor_format"] == kind.value and meta["sampling_frequency"] == 500.0
    assert meta["patient_id"] == PATIENT and meta["acquisition_time"].startswith("2024-01-01T12:00")
    assert meta["vendor_statements"] == STATEMENTS
    measured = meta["vendor_measurements"]
    assert {"heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms"} <= set(measured)
    assert set(measured) <= {"heart_rate_bpm", "rr_ms", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "p_axis_deg",
                             "qrs_axis_deg", "t_axis_deg"}
    assert all(isinstance(v, int | float) for v in measured.values())
    # MUSE stores 8 leads by default; the others store all 12
    assert meta["derived_leads"] == (["III", "aVR", "aVL", "aVF"] if kind is FileType.GE_MUSE else [])
    json.dumps(meta)  # it goes to documents.source_metadata as JSON


def test_muse_eight_leads_are_completed_from_i_and_ii(record) -> None:
    eight = decode_bytes(write_muse(record.signals, record.fs, eight_leads=True))[1][0]
    twelve = decode_bytes(write_muse(record.signals, record.fs, eight_leads=False))[1][0]
    assert eight.metadata["derived_leads"] == ["III", "aVR", "aVL", "aVF"] and twelve.metadata["derived_leads"] == []
    assert _ink_difference(eight.image, twelve.image) < 0.02  # the same drawing, to the stored resolution


def test_the_page_is_the_rhythm_recording_never_the_median_beat(record) -> None:
    with_median = decode_bytes(write_aecg(record.signals, record.fs, median_beat=True))[1][0]
    without = decode_bytes(write_aecg(record.signals, record.fs, median_beat=False))[1][0]
    assert np.array_equal(with_median.image, without.image)
    drawn = render_paper(record.signals, record.fs, list(STANDARD_LEADS))
    assert _ink_difference(with_median.image, drawn) < 0.02
    muse = decode_bytes(write_muse(record.signals, record.fs, median_beat=True))[1][0]
    assert _ink_difference(muse.image, drawn) < 0.05


@pytest.mark.parametrize("fs", [500, 1000, 100])
def test_aecg_at_each_sampling_rate_is_drawn_at_that_rate(record, fs: int) -> None:
    t_old = np.arange(record.signals.shape[1]) / record.fs
    t_new = np.arange(round(10 * fs)) / fs
    signals = np.stack([np.interp(t_new, t_old, lead) for lead in record.signals])
    page = decode_bytes(write_aecg(signals, fs))[1][0]
    assert page.metadata["sampling_frequency"] == pytest.approx(fs)
    assert _ink_difference(page.image, render_paper(signals, fs, list(STANDARD_LEADS))) < 0.03


@pytest.mark.parametrize(("encoding", "declared"), [("utf-16", None), ("utf-8", None), ("utf-16", "utf-8"),
                                                    ("utf-8", "utf-16")])
def test_philips_in_every_encoding_and_a_lying_declaration(record, encoding: str, declared: str | None) -> None:
    data = write_philips(record.signals, record.fs, encoding=encoding, declared_encoding=declared,
                         patient_id=PATIENT)
    assert data.startswith((b"\xff\xfe", b"\xfe\xff")) == (encoding == "utf-16")
    file_type, pages = decode_bytes(data)
    assert file_type is FileType.PHILIPS and pages[0].metadata["patient_id"] == PATIENT


def test_muse_in_utf16_with_bom_and_latin1_behind_a_utf8_declaration(record) -> None:
    data = write_muse(record.signals, record.fs, statements=["Sinus rhythm, caf\u00e9"])
    text = data.decode("iso-8859-1")
    utf16 = text.replace('encoding="ISO-8859-1"', 'encoding="UTF-16"').encode("utf-16")  # BOM + UTF-16 LE
    lying = text.replace('encoding="ISO-8859-1"', 'encoding="UTF-8"').encode("iso-8859-1")
    utf16_be = b"\xfe\xff" + text.replace('encoding="ISO-8859-1"', 'encoding="UTF-16"').encode("utf-16-be")
    utf8_bom = b"\xef\xbb\xbf" + text.replace('encoding="ISO-8859-1"', 'encoding="UTF-8"').encode("utf-8")
    for variant in (utf16, lying, utf16_be, utf8_bom):
        file_type, pages = decode_bytes(variant)
        assert file_type is FileType.GE_MUSE
        assert pages[0].metadata["vendor_statements"] == ["Sinus rhythm, caf\u00e9"]


def test_sniffing_reads_the_content_never_the_name(files: dict[FileType, bytes], tmp_path: Path) -> None:
    for kind, data in files.items():
        path = tmp_path / f"{kind.value}.pdf"
        path.write_bytes(data)
        assert sniff(path) is kind and decode(path)[0] is kind
    # comments, a processing instruction and a long DOCTYPE before the root
    prolog = b'<?xml version="1.0"?>\n<!-- ' + b"x" * 5000 + b' -->\n<?pi data?>\n<!DOCTYPE RestingECG SYSTEM "r.dtd">'
    assert sniff_bytes(prolog + b"\n<RestingECG></RestingECG>", complete=True) is FileType.GE_MUSE
    assert sniff_bytes(b'<v3:AnnotatedECG xmlns:v3="urn:hl7-org:v3"/>', complete=True) is FileType.HL7_AECG


@pytest.mark.parametrize(("data", "reason", "words"), [
    (b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>', Reason.UNSUPPORTED_TYPE, "<svg>"),
    (b'<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"/>', Reason.UNSUPPORTED_TYPE,
     "<ClinicalDocument>"),
    (b'<AnnotatedECG xmlns="urn:example:not-hl7"><component/></AnnotatedECG>', Reason.UNSUPPORTED_TYPE,
     "urn:example:not-hl7"),
    (b"<AnnotatedECG><component/></AnnotatedECG>", Reason.UNSUPPORTED_TYPE, "urn:hl7-org:v3"),
    (b"<RestingECG><a></b></RestingECG>", Reason.CORRUPT, "malformed XML"),
    (b"<RestingECG><PatientDemographics/></RestingECG>", Reason.NOT_ECG, "no waveform"),
    (b'<?xml version="1.0"?>\n<!-- nothing else', Reason.TRUNCATED, "ends"),
])
def test_xml_that_is_not_a_readable_ecg_gets_its_reason(data: bytes, reason: Reason, words: str) -> None:
    error = _reason(data)
    assert error.reason is reason and words in error.message, error


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE RestingECG [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<RestingECG><PatientDemographics><PatientID>&lol4;</PatientID></PatientDemographics></RestingECG>"""


def test_entities_are_refused_and_nothing_external_is_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    external = (b'<?xml version="1.0"?><!DOCTYPE AnnotatedECG [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]>'
                b'<AnnotatedECG xmlns="urn:hl7-org:v3"><id>&x;</id></AnnotatedECG>')
    local_file = (b'<?xml version="1.0"?><!DOCTYPE restingecgdata [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                  b"<restingecgdata>&x;</restingecgdata>")
    parameter = (b'<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p"> %p;]>'
                 b"<RestingECG/>")
    for data in (BILLION_LAUGHS, external, local_file, parameter):
        error = _reason(data)
        assert error.reason is Reason.CORRUPT and "entity declarations are not allowed" in error.message, error


def test_a_depth_bomb_is_too_large(files: dict[FileType, bytes]) -> None:
    deep = b"<RestingECG>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</RestingECG>"
    error = _reason(deep)
    assert error.reason is Reason.TOO_LARGE and "deeper than 64" in error.message
    assert decode_bytes(files[FileType.HL7_AECG], DecodeLimits(max_xml_depth=64))  # real aECG nests about 12 deep


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_cut_file_is_truncated(files: dict[FileType, bytes], kind: FileType) -> None:
    data = files[kind]
    for fraction in (0.2, 0.5, 0.9, 0.999):
        cut = data[: int(len(data) * fraction)]
        error = _reason(cut)
        assert error.reason is Reason.TRUNCATED, (fraction, error)
    if data.startswith(b"\xff\xfe"):  # half a UTF-16 code unit
        assert _reason(data[:-1]).reason is Reason.TRUNCATED


@pytest.mark.parametrize("kind", list(WRITERS))
def test_size_limits_hold_before_the_waveform_is_decoded(files: dict[FileType, bytes], kind: FileType,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = files[kind]
    error = _reason(data, DecodeLimits(max_file_bytes=len(data) - 1))
    assert error.reason is Reason.TOO_LARGE and "MiB" in error.message

    def never(*_: object) -> None:
        raise AssertionError("ecgdatakit was reached")

    monkeypatch.setattr(waveform_record, "parse_record", never)  # every decoder's one way to ecgdatakit
    error = _reason(data, DecodeLimits(max_waveform_samples=7 * 5000))
    assert error.reason is Reason.TOO_LARGE and "channels" in error.message


def test_an_xli_bomb_is_refused_before_it_inflates(record) -> None:
    """A long flat recording compresses to almost nothing; declared as 1 s, it would inflate unchecked."""
    flat = np.zeros((12, 200_000))
    data = write_philips(flat, 500, encoding="utf-8")
    text = data.decode("utf-8")
    text = re.sub(r'durationperchannel="\d+"', 'durationperchannel="1000"', text)
    text = re.sub(r"<durationperchannel>\d+</", "<durationperchannel>1000</", text)
    error = _reason(text.encode("utf-8"))
    assert error.reason is Reason.TOO_LARGE and "XLI" in error.message


def test_too_few_leads_is_not_ecg_and_names_them(record) -> None:
    data = write_muse(record.signals, record.fs).decode("iso-8859-1")
    rhythm = data.index("<WaveformType>Rhythm")
    head, tail = data[:rhythm], data[rhythm:]
    tail = re.sub(r"<LeadData>(?:(?!</LeadData>).)*<LeadID>V5</LeadID>.*?</LeadData>", "", tail, flags=re.DOTALL)
    error = _reason((head + tail).encode("iso-8859-1"))
    assert error.reason is Reason.NOT_ECG and "V5" in error.message, error


def test_patient_identifiers_never_reach_a_log(files: dict[FileType, bytes], caplog: pytest.LogCaptureFixture,
                                               tmp_path: Path) -> None:
    from ingest.decode.isolated import Decoder

    caplog.set_level(logging.DEBUG)
    broken = [data[: len(data) // 2] for data in files.values()]
    broken.append(files[FileType.GE_MUSE].replace(b"<LeadSampleSize>2", b"<LeadSampleSize>3"))
    for data in [*files.values(), *broken]:
        try:
            decode_bytes(data)
        except IngestError as error:
            assert PATIENT not in error.message
    with Decoder(DecodeLimits(), isolated=False) as decoder:
        for i, data in enumerate([*files.values(), *broken]):
            path = tmp_path / f"f{i}.xml"
            path.write_bytes(data)
            try:
                decoder.decode(path)
            except IngestError as error:
                assert PATIENT not in error.message
    assert PATIENT not in caplog.text and "SYNTHETIC" not in caplog.text


def test_twelve_leads_derives_limb_leads_by_einthoven_and_goldberger() -> None:
    class Lead:
        def __init__(self, label: str, samples: np.ndarray) -> None:
            self.label, self.samples, self.sampling_rate = label, samples, 500

        def to_physical(self) -> Lead:
            return self

        def convert_units(self, _: str) -> Lead:
            return self

    class Record:
        def __init__(self, leads: list[Lead]) -> None:
            self.leads, self.raw_metadata = leads, {}

    rng = np.random.default_rng(3)
    values = {name: rng.normal(size=600) for name in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")}
    rec = Record([Lead(name, v) for name, v in values.items()])
    signals, fs, derived = twelve_leads(rec, DecodeLimits())
    i, ii = values["I"], values["II"]
    assert fs == 500.0 and derived == ["III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(signals[2], ii - i)
    np.testing.assert_allclose(signals[3], -(i + ii) / 2)
    np.testing.assert_allclose(signals[4], i - ii / 2)
    np.testing.assert_allclose(signals[5], ii - i / 2)


def test_the_same_recording_gets_the_same_answer_in_every_format(record, files: dict[FileType, bytes],
                                                                 bundle_dir: Path, tmp_path: Path) -> None:
    """MUSE, Philips, aECG, SCP-ECG and a DICOM waveform of one recording, through the real cleaning and the
    engine."""
    from model_training.manifest import load_manifest
    from model_training.synth.dicom_out import write_waveform
    from worker.engine import load_engine

    dicom = write_waveform(record, tmp_path / "same.dcm").read_bytes()
    manifest = load_manifest(bundle_dir)
    engine = load_engine(bundle_dir, "cpu", threads=2, batch_size=1, cache_dir=bundle_dir.parent / "engine-cache")
    answers = {}
    for name, data in [*((k.value, v) for k, v in files.items()), ("dicom", dicom)]:
        (page,) = decode_bytes(data, working_copy=True)[1]
        prepared = manifest.preparation(page)
        answers[name] = engine.predict(prepared.model_input[None])[0]
    spread = np.ptp(np.stack(list(answers.values())), axis=0)
    assert spread.max() < 0.05, answers
    other = generate_record(8)  # another heart gets another answer: agreement is not the model ignoring its input
    (page,) = decode_bytes(write_muse(other.signals, other.fs), working_copy=True)[1]
    elsewhere = engine.predict(manifest.preparation(page).model_input[None])[0]
    assert np.abs(elsewhere - answers["dicom"]).max() > 2 * spread.max(), (elsewhere, answers)


def test_muse_philips_and_aecg_through_the_whole_service(record, cli, home: Path, tmp_path: Path) -> None:
    """`ecg-intake run --once` on one of each (and a broken MUSE): three documents done with predictions, the
    vendor metadata in documents.source_metadata, the broken one quarantined; no patient ID in any log line."""
    from sqlalchemy import create_engine, text

    from worker.settings import embedded_database_url

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    other = generate_record(8)
    written = {"muse.dat": write_muse(record.signals, record.fs, patient_id=PATIENT + "-M"),
               "philips.xml": write_philips(other.signals, other.fs, patient_id=PATIENT + "-P"),
               "aecg": write_aecg(generate_record(9).signals, 500, patient_id=PATIENT + "-A"),
               "cut-muse.xml": write_muse(other.signals, other.fs, patient_id=PATIENT + "-C")[:30_000]}
    for name, data in written.items():
        (inbox / name).write_bytes(data)
        os.utime(inbox / name, (1e9, 1e9))
    cli.env["ECG_INTAKE_LOG_LEVEL"] = "DEBUG"
    result = cli("run", "--once", "--inbox", str(inbox))
    said = result.stdout + result.stderr
    assert PATIENT not in said and "SYNTHETIC" not in said

    engine = create_engine(embedded_database_url(home))
    with engine.connect() as conn:
        rows = conn.execute(text("select path, file_type, status, source_metadata, id from documents")).all()
        predictions = dict(conn.execute(text(
            "select d.file_type, count(*) from predictions p join pages g on p.page_id = g.id "
            "join documents d on g.document_id = d.id group by d.file_type")).all())
    by_type = {row.file_type: row for row in rows}
    assert {"ge-muse", "philips-xml", "hl7-aecg"} <= set(by_type)
    for kind, suffix in (("ge-muse", "-M"), ("philips-xml", "-P"), ("hl7-aecg", "-A")):
        row = by_type[kind]
        assert row.status == "done" and predictions.get(kind, 0) >= 1, row
        meta = row.source_metadata if isinstance(row.source_metadata, dict) else json.loads(row.source_metadata)
        assert meta["vendor_format"] == kind and meta["patient_id"] == PATIENT + suffix
        assert meta["sampling_frequency"] == 500.0 and "heart_rate_bpm" in meta["vendor_measurements"]
    reasons = [json.loads(p.read_text())["reason"] for p in (home / "quarantine").rglob("*.reason.json")]
    assert reasons == ["truncated"]
