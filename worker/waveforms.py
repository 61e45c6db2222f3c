"""Step three: every stored page of a document as 12-lead signals, with the calipers' measurements on them.

A waveform file's page (DICOM waveform, vendor XML) stores the recording it carries; a drawn page is read back
by the digitiser, and its trace image (the sheet with the read leads drawn back) is stored beside the page's
other images, as are WFDB files of the signals. Neither the classifier nor the file's fate depends on this: a
page that cannot be read gets its leads recorded as unread, and the error is logged, never quarantined.

Stored pages hold only the model input and a thumbnail, so the original is decoded again from where it lies
now (the task runs after classification, when that is the archive).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.decode.isolated import Decoder
from ingest.files import write_atomic
from ingest.page import Page as DecodedPage
from ingest.reasons import IngestError
from ingest.render import STANDARD_LEADS
from model_training.digitise.classical import FS, TIMES, Digitised
from model_training.digitise.overlay import draw_trace
from model_training.digitise.page import digitise_image
from model_training.digitise.quality import PARTIAL_SHARE, SOURCE, lead_quality
from model_training.digitise.write import write_wfdb
from model_training.measure import PageMeasurements, measure_page
from worker import metrics
from worker.db.models import DocumentStatus, Waveform, WaveformReading
from worker.db.queries import document_by_sha, read_page_ids
from worker.db.session import session_scope
from worker.settings import Settings

log = logging.getLogger(__name__)
NOT_READ = "none"  # the method of a page no digitiser finished reading
SAMPLE_DTYPE = np.dtype("<f4")


class ReadingStatus:
    """How a page's waveform was got: its file's own recording, read back, or not read (and why)."""

    SOURCE = "source"
    READ = "read"
    NO_LAYOUT = "no_layout"
    FAILED = "failed"


@dataclass(frozen=True)
class PageWaveform:
    """One page's signals (leads x samples, mV, NaN where unread) and what is stored about them."""

    digitised: Digitised
    method: str
    status: str
    layout: str | None = None
    trace: np.ndarray | None = None
    message: str | None = None


def from_recording(page: DecodedPage) -> PageWaveform:
    """A waveform file's page: its own samples at its own rate; its read share is the share of samples the file
    holds (a DICOM waveform's padding value decodes as a gap)."""
    fs = round(float(page.metadata["sampling_frequency"]))
    signals = np.asarray(page.signals, dtype=np.float64)
    held = {lead: float(np.isfinite(signal).mean()) for lead, signal in zip(STANDARD_LEADS, signals, strict=True)}
    return PageWaveform(Digitised(signals, STANDARD_LEADS, held, fs), SOURCE, ReadingStatus.SOURCE)


def unread(message: str, method: str = NOT_READ) -> PageWaveform:
    """A page none of whose leads could be read, and why."""
    signals = np.full((len(STANDARD_LEADS), TIMES.size), np.nan)
    return PageWaveform(Digitised(signals, STANDARD_LEADS, dict.fromkeys(STANDARD_LEADS, 0.0), FS), method,
                        ReadingStatus.FAILED, message=message)


def read_back(page: DecodedPage) -> PageWaveform:
    """A drawn page read by the digitiser, with its trace image; a page with no standard layout is unread."""
    reading = digitise_image(page.image)
    status = ReadingStatus.READ if reading.layout.name else ReadingStatus.NO_LAYOUT
    message = None if reading.layout.name else "no standard layout found (3x4, 6x2, 12x1, 2x6)"
    return PageWaveform(reading.digitised, reading.method, status, reading.layout.name, draw_trace(reading), message)


def page_waveform(page: DecodedPage) -> PageWaveform:
    """The page's signals by whichever way its file allows; a digitiser error is the page's, not the file's."""
    if page.signals is not None:
        return from_recording(page)
    try:
        return read_back(page)
    except Exception as exc:  # a digitiser bug on an odd page must cost that page's waveform only
        log.exception("digitising page %d failed", page.page_no)
        return unread(f"{type(exc).__name__}: {str(exc)[:500]}")


def digitise_document(settings: Settings, sha256: str, decoder: Decoder) -> int:
    """Store the waveform of every page of the document that has none yet; returns how many pages were stored.

    Safe to run twice: a page with a reading is skipped, and a second writer of the same page loses on the
    unique page key without changing what the first stored.
    """
    with session_scope(settings.sqlalchemy_url) as session:
        document = document_by_sha(session, sha256)
        if document is None or document.status == DocumentStatus.QUARANTINED:
            return 0
        done = read_page_ids(session, [page.id for page in document.pages])
        todo = {page.page_no: (page.id, Path(page.image_path).parent) for page in document.pages
                if page.id not in done}
        original = Path(document.current_path)
    if not todo:
        return 0
    with metrics.stage("digitise"):
        pages = _read_pages(sha256, original, todo, decoder)
    with session_scope(settings.sqlalchemy_url) as session:
        for page in pages:
            record_waveform(session, page)
        try:
            session.commit()
        except IntegrityError:  # another run stored these pages a moment ago
            session.rollback()
            return 0
    for page in pages:
        read = sum(share >= PARTIAL_SHARE for share in page.waveform.digitised.read.values())
        log.info("document %s page id %d: waveform %s (%s), %d of 12 leads, %.2f s", sha256[:12], page.page_id,
                 page.waveform.status, page.waveform.layout or page.waveform.method, read, page.seconds)
    return len(pages)


def _read_pages(sha256: str, original: Path, todo: dict[int, tuple[int, Path]], decoder: Decoder) -> list[ReadPage]:
    """Decode the original again and read the pages of `todo` (page number -> page id, page folder)."""
    try:
        _, decoded = decoder.decode(original)
        by_number = {page.page_no: page for page in decoded}
        missing = "the original no longer has this page"
    except (IngestError, OSError) as exc:
        log.error("document %s: its original could not be decoded again for its waveforms: %s", sha256[:12], exc)
        by_number, missing = {}, f"the original could not be decoded again: {exc}"
    return [read_page(page_id, folder, page_no, by_number.get(page_no), missing)
            for page_no, (page_id, folder) in sorted(todo.items())]


@dataclass(frozen=True)
class ReadPage:
    """What is stored for one page: its waveform, its measurements, its files and what reading it took."""

    page_id: int
    waveform: PageWaveform
    measured: PageMeasurements
    files: dict[str, str | None]
    seconds: float


def read_page(page_id: int, folder: Path, page_no: int, page: DecodedPage | None, missing: str = "") -> ReadPage:
    """One decoded page's waveform, measured, its files written into `folder`; `missing`: why there is no page."""
    started = time.perf_counter()
    waveform = page_waveform(page) if page is not None else unread(missing)
    measured = _measured(waveform.digitised)
    files = _write_files(folder, page_no, waveform)
    return ReadPage(page_id, waveform, measured, files, time.perf_counter() - started)


def _measured(digitised: Digitised) -> PageMeasurements:
    """The page's measurements; none when measuring fails, which must not cost the stored signals."""
    try:
        return measure_page(digitised.signals, digitised.fs, digitised.leads)
    except Exception:
        log.exception("measuring a page's waveform failed")
        return PageMeasurements(None, None, None, None, None, None, 0, ())


def _write_files(folder: Path, page_no: int, waveform: PageWaveform) -> dict[str, str | None]:
    """The trace PNG and the WFDB record beside the page's images; none for a page with nothing read."""
    files: dict[str, str | None] = {"trace_path": None, "wfdb_path": None}
    if waveform.trace is not None:
        ok, png = cv2.imencode(".png", waveform.trace)
        if ok:
            path = folder / f"trace-{page_no:03d}.png"
            write_atomic(path, png.tobytes())
            files["trace_path"] = str(path)
    if np.isfinite(waveform.digitised.signals).any():
        comments = [f"ecg-intake: {waveform.method}", f"layout: {waveform.layout or '-'}"]
        files["wfdb_path"] = str(write_wfdb(folder, f"signals-{page_no:03d}", waveform.digitised, comments))
    return files


def record_waveform(session: Session, page: ReadPage) -> None:
    """One `waveforms` row per lead and the page's `waveform_readings` row."""
    page_id, waveform = page.page_id, page.waveform
    digitised = waveform.digitised
    for lead, signal in zip(digitised.leads, digitised.signals, strict=True):
        share = digitised.read[lead]
        quality = SOURCE if waveform.status == ReadingStatus.SOURCE else lead_quality(share)
        session.add(Waveform(page_id=page_id, lead=lead, method=waveform.method, fs=digitised.fs,
                             samples=np.asarray(signal, SAMPLE_DTYPE).tobytes(), read_share=share,
                             quality=quality, layout=waveform.layout))
    session.add(WaveformReading(page_id=page_id, method=waveform.method, status=waveform.status,
                                message=waveform.message, layout=waveform.layout,
                                **page.measured.as_dict(), seconds=page.seconds, **page.files))


def samples(row: Waveform) -> np.ndarray:
    """A stored lead's signal (mV, float32, NaN where unread)."""
    return np.frombuffer(row.samples, SAMPLE_DTYPE)

