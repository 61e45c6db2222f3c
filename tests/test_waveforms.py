"""Every stored page gets its 12-lead waveform: real files through the real decoders, intake, the classifier and
the digitise task, on SQLite and on the suite's PostgreSQL.

A DICOM waveform stores its own recording; a drawn page is read back with quality flags, a trace image, WFDB
files and measurements; a page with nothing to read records unread leads and its file is archived all the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import wfdb
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from ingest.decode import decode
from ingest.decode.isolated import Decoder
from ingest.render import STANDARD_LEADS, PaperStyle, render_paper
from model_training.measure import measure
from model_training.synth.signals import generate_record
from tests.helpers.cli import Cli
from tests.helpers.intake import drop_and_claim
from worker import tasks
from worker.celery_app import DIGITISE_TASK, get_producer
from worker.db.migrate import upgrade
from worker.db.models import Document, DocumentStatus, Page, Waveform, WaveformReading
from worker.db.session import session_scope
from worker.intake import intake
from worker.settings import Settings, embedded_database_url, get_settings
from worker.waveforms import digitise_document, samples

SEED = 3  # a plain sinus rhythm at 59 bpm


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 bundle_dir: Path) -> Iterator[Settings]:
    """This process's settings on a fresh data home and database; the classify task runs here, in-process."""
    for key in [k for k in os.environ if k.startswith("ECG_INTAKE_")]:
        monkeypatch.delenv(key)
    env = {"HOME": str(tmp_path / "home"), "BUNDLE": str(bundle_dir), "ENGINE": "cpu", "TORCH_THREADS": "2",
           "ENGINE_CACHE": str(bundle_dir.parent / "engine-cache"), "DECODE_ISOLATION": "false"}
    if request.param == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    for key, value in env.items():
        monkeypatch.setenv(f"ECG_INTAKE_{key}", value)
    get_settings.cache_clear()
    get_producer.cache_clear()  # the classify task sends the digitise task into this home's queue
    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.sqlalchemy_url)
    yield settings
    get_settings.cache_clear()
    get_producer.cache_clear()


def _take_in(settings: Settings, path: Path, tmp_path: Path) -> str:
    """Intake and classification as the worker runs them; the document is archived once they return."""
    decoder = Decoder(settings.decode_limits(), isolated=False)
    found = intake(settings, drop_and_claim(path, tmp_path / "inbox"), decoder)
    assert found is not None and found.status == DocumentStatus.DECODED
    assert tasks.classify_document(found.sha256) == 1
    return found.sha256


def _digitise_messages(settings: Settings) -> int:
    """Digitise tasks waiting in the embedded queue (the message headers name the task)."""
    folder = settings.broker_dir / "queue"  # made when the first message is sent
    return sum(DIGITISE_TASK in path.read_text(errors="replace")
               for path in folder.iterdir() if path.is_file()) if folder.is_dir() else 0


def _stored(settings: Settings, sha256: str) -> dict:
    with session_scope(settings.sqlalchemy_url) as session:
        document = session.scalar(select(Document).where(Document.sha256 == sha256))
        (page,) = document.pages
        leads = session.scalars(select(Waveform).where(Waveform.page_id == page.id).order_by(Waveform.id)).all()
        reading = session.scalar(select(WaveformReading).where(WaveformReading.page_id == page.id))
        return {"status": document.status, "current_path": document.current_path, "page": page.image_path,
                "leads": [(w.lead, w.method, w.fs, w.quality, w.read_share, w.layout, samples(w).copy())
                          for w in leads],
                "reading": {c.name: getattr(reading, c.name) for c in WaveformReading.__table__.columns}
                if reading else None}


def _decoder(settings: Settings) -> Decoder:
    return Decoder(settings.decode_limits(), isolated=False)


def test_a_dicom_waveform_stores_its_own_recording(installation: Settings, tmp_path: Path) -> None:
    source = Path(get_testdata_file("waveform_ecg.dcm"))
    sha256 = _take_in(installation, source, tmp_path)
    assert digitise_document(installation, sha256, _decoder(installation)) == 1
    stored = _stored(installation, sha256)
    (page,) = decode(source)[1]
    assert [lead[:4] for lead in stored["leads"]] == [(name, "source", 1000, "source") for name in STANDARD_LEADS]
    assert {lead[4] for lead in stored["leads"]} == {1.0}  # every sample held
    np.testing.assert_array_equal(np.stack([lead[6] for lead in stored["leads"]]),
                                  page.signals.astype(np.float32))
    reading = stored["reading"]
    assert reading["status"] == "source" and reading["trace_path"] is None
    header = wfdb.rdheader(reading["wfdb_path"].removesuffix(".hea"))
    assert header.fs == 1000 and header.sig_name == list(STANDARD_LEADS)
    assert reading["heart_rate"] == pytest.approx(measure(page.signals, 1000).heart_rate)


def test_a_drawn_page_is_read_back_measured_and_drawn_again_and_a_second_run_changes_nothing(
        installation: Settings, tmp_path: Path) -> None:
    record = generate_record(SEED)
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), render_paper(record.signals, record.fs, STANDARD_LEADS, PaperStyle(dpi=100)))
    sha256 = _take_in(installation, path, tmp_path)
    assert _digitise_messages(installation) == 1  # sent by the classify task, for an ingest worker
    assert digitise_document(installation, sha256, _decoder(installation)) == 1

    stored = _stored(installation, sha256)
    assert stored["status"] == DocumentStatus.DONE and "archive" in Path(stored["current_path"]).parts
    assert [lead[0] for lead in stored["leads"]] == list(STANDARD_LEADS)
    (method,) = {lead[1] for lead in stored["leads"]}
    assert method in ("learned", "classical") and {lead[2] for lead in stored["leads"]} == {500}
    assert {lead[5] for lead in stored["leads"]} == {"3x4"}
    assert [lead[3] for lead in stored["leads"]] == ["read"] * 12  # a clean page: every lead read whole
    assert all(np.isfinite(lead[6]).sum() >= 0.25 * lead[6].size for lead in stored["leads"])
    reading = stored["reading"]
    assert reading["status"] == "read" and reading["layout"] == "3x4" and reading["method"] == method
    assert abs(reading["heart_rate"] - measure(record.signals, record.fs).heart_rate) <= 10
    assert reading["qrs_ms"] is not None and reading["axis_deg"] is not None
    folder = Path(stored["page"]).parent
    trace = cv2.imread(reading["trace_path"])
    assert Path(reading["trace_path"]).parent == folder and trace.ndim == 3 and trace.shape[1] > 500
    assert (trace[..., 1].astype(int) - trace[..., 2] > 60).any()  # green lines: leads read
    header = wfdb.rdheader(reading["wfdb_path"].removesuffix(".hea"))
    assert Path(reading["wfdb_path"]).parent == folder and header.sig_name == list(STANDARD_LEADS)
    assert (folder / "signals-001.dat").is_file()

    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert digitise_document(installation, sha256, _decoder(installation)) == 0
    again = _stored(installation, sha256)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    assert again["reading"] == reading
    for first, second in zip(stored["leads"], again["leads"], strict=True):
        assert first[:6] == second[:6] and np.array_equal(first[6], second[6], equal_nan=True)


def test_a_blank_page_records_unread_leads_and_is_archived(installation: Settings, tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), np.full((827, 1169, 3), 255, np.uint8))
    sha256 = _take_in(installation, path, tmp_path)
    assert digitise_document(installation, sha256, _decoder(installation)) == 1
    stored = _stored(installation, sha256)
    assert stored["status"] == DocumentStatus.DONE and Path(stored["current_path"]).is_file()
    assert [lead[3] for lead in stored["leads"]] == ["unread"] * 12
    assert all(np.isnan(lead[6]).all() for lead in stored["leads"])
    reading = stored["reading"]
    assert reading["status"] == "no_layout" and reading["heart_rate"] is None and reading["wfdb_path"] is None
    assert Path(reading["trace_path"]).is_file()  # the sheet, saying no layout was found
    with session_scope(installation.sqlalchemy_url) as session:
        assert session.scalar(select(Page.id)) is not None


def test_the_embedded_run_stores_waveforms_before_once_returns(cli: Cli, home: Path, tmp_path: Path) -> None:
    """`run --once`: the classifier sends the digitise task, the ingest worker runs it, `--once` waits for it."""
    cli.env["ECG_INTAKE_DIGITISE"] = "true"
    record = generate_record(SEED)
    (tmp_path / "inbox").mkdir()
    cv2.imwrite(str(tmp_path / "inbox" / "scan.png"),
                render_paper(record.signals, record.fs, STANDARD_LEADS, PaperStyle(dpi=100)))
    cli("run", "--once", "--inbox", str(tmp_path / "inbox"))
    with session_scope(embedded_database_url(home)) as session:
        stored = session.execute(select(Document.status, WaveformReading.status, func.count(Waveform.id))
                                 .select_from(Document).join(Page, Page.document_id == Document.id)
                                 .join(WaveformReading, WaveformReading.page_id == Page.id)
                                 .join(Waveform, Waveform.page_id == Page.id)
                                 .group_by(Document.status, WaveformReading.status)).all()
    assert stored == [(DocumentStatus.DONE, "read", 12)]


def test_an_original_gone_from_the_archive_records_a_failed_reading(installation: Settings, tmp_path: Path) -> None:
    """The task never raises over a page it cannot read: the reason is stored, the leads are unread."""
    record = generate_record(SEED)
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), render_paper(record.signals, record.fs, STANDARD_LEADS, PaperStyle(dpi=100)))
    sha256 = _take_in(installation, path, tmp_path)
    archived = Path(_stored(installation, sha256)["current_path"])
    archived.rename(tmp_path / "kept-aside.png")
    assert digitise_document(installation, sha256, _decoder(installation)) == 1
    stored = _stored(installation, sha256)
    assert stored["status"] == DocumentStatus.DONE
    assert {lead[1:4] for lead in stored["leads"]} == {("none", 500, "unread")}
    reading = stored["reading"]
    assert reading["status"] == "failed" and "could not be decoded again" in reading["message"]
    assert (reading["trace_path"], reading["wfdb_path"], reading["heart_rate"]) == (None, None, None)


def test_with_digitising_off_the_classify_task_sends_nothing(installation: Settings, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECG_INTAKE_DIGITISE", "false")
    get_settings.cache_clear()
    _take_in(get_settings(), Path(get_testdata_file("waveform_ecg.dcm")), tmp_path)
    assert _digitise_messages(get_settings()) == 0
