"""Step one of a claimed file: hash, dedup, decode, preprocess and store its pages.

Every function here is safe to run twice for the same file: the document key is its sha256,
and a file whose record is already final only finishes its move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ingest.correlation import follow_document
from ingest.decode.isolated import Decoder
from ingest.files import claim_lock, destination, move, sha256_file, write_atomic, write_reason
from ingest.page import PreparedPage
from ingest.preprocess import PREPROCESS_VERSION, Preparation
from ingest.reasons import IngestError, InstallationError, Reason
from ingest.sniff import FileType
from ingest.watch import Claim, claim_id
from worker import lifecycle, metrics
from worker.db.models import Document, DocumentStatus, Page
from worker.db.queries import document_by_sha
from worker.db.session import session_scope
from worker.disposition import settle
from worker.serving import champion
from worker.settings import Settings

log = logging.getLogger(__name__)
PNG_LEVEL = 1  # the stored model input: 1.4 core-ms for 16.6 kB, against level 6: 2.2 ms, 15.4 kB (bench decode)


@dataclass(frozen=True)
class IntakeResult:
    """What happened to one claim; `classify` is True when its pages now wait for the model."""

    sha256: str
    status: str
    classify: bool = False


def _record_duplicate(settings: Settings, session: Session, original: Document, claim: Claim) -> IntakeResult:
    """A re-dropped file: logged as a sighting of the first document, kept next to it, not processed again."""
    root = settings.quarantine_dir if original.status == DocumentStatus.QUARANTINED else settings.archive_dir
    dest = destination(root / "duplicates", original.sha256, claim.claimed)
    lifecycle.sighted_again(session, original, claim, str(dest))
    session.commit()
    try:
        if original.status == DocumentStatus.QUARANTINED:
            write_reason(dest, Reason(original.reason), f"same bytes as quarantined document "
                         f"{original.sha256[:12]}: {original.reason_message}", sha256=original.sha256,
                         original_path=str(claim.original))
        move(claim.claimed, dest)
    except OSError as exc:
        raise InstallationError(f"duplicate of {original.sha256[:12]} stays claimed: cannot move it into "
                                f"{dest.parent}: {exc.strerror or type(exc).__name__}") from exc
    log.info("document %s seen again; recorded as a duplicate sighting", original.sha256[:12])
    return IntakeResult(original.sha256, "duplicate")


def quarantine(settings: Settings, session: Session, document: Document, claimed: Path, error: IngestError) -> None:
    """Record the reason, then move the original into the quarantine with its `.reason.json`."""
    lifecycle.quarantine(session, document, error, str(destination(settings.quarantine_dir, document.sha256, claimed)))
    session.commit()
    metrics.quarantined(error.reason)
    settle(document, claimed, held=True)
    log.warning("document %s quarantined: %s", document.sha256[:12], error.reason.value)


def _encoded(suffix: str, image, *params: int) -> bytes:
    ok, buffer = cv2.imencode(suffix, image, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {suffix} page")
    return buffer.tobytes()


def store_pages(settings: Settings, sha256: str, pages: list[PreparedPage]) -> list[dict]:
    """Write each page's model input and thumbnail whole or not at all; the rows that name them.

    Encoded here and written by Python, so a full disk is an OSError (cv2.imwrite only returns False
    and may leave half a file that classification would later fail to read).
    """
    folder = settings.pages_dir / sha256[:2] / sha256
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for page in pages:
        image_path = folder / f"page-{page.page_no:03d}.png"
        write_atomic(image_path, _encoded(".png", page.model_input, cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL))
        thumbnail_path = folder / f"thumb-{page.page_no:03d}.jpg"
        write_atomic(thumbnail_path, _encoded(".jpg", page.thumbnail, cv2.IMWRITE_JPEG_QUALITY, 85))
        rows.append({"page_no": page.page_no, "image_path": str(image_path), "thumbnail_path": str(thumbnail_path),
                     "source": page.source})
    return rows


def decode_pages(settings: Settings, sha256: str, claimed: Path, decoder: Decoder, preparation: Preparation
                 ) -> tuple[FileType, list[PreparedPage], list[dict]]:
    """Decode the original, prepare its pages as `preparation` makes them and store their files; no database
    work, so no transaction is held while a file decodes. A file that cannot be decoded raises `IngestError`."""
    try:
        with metrics.stage("decode"):
            file_type, pages = decoder.decode_prepared(claimed, preparation)
    except (IngestError, InstallationError):
        raise
    except Exception as exc:  # a decoder bug on odd input must not stop the worker
        log.exception("decoder failed on document %s", sha256[:12])
        raise IngestError(Reason.INTERNAL_ERROR, f"decoder error {type(exc).__name__}: {exc}") from exc
    try:
        with metrics.stage("page_files"):
            rows = store_pages(settings, sha256, pages)
    except OSError as exc:
        raise InstallationError(f"document {sha256[:12]} stays claimed: cannot write its pages under "
                                f"{settings.pages_dir}: {exc.strerror or type(exc).__name__}") from exc
    return file_type, pages, rows


def record_pages(session: Session, document: Document, rows: list[dict], preparation: Preparation) -> None:
    """The document's page rows, each marked with the preparation's key; pages made for another model replaced."""
    existing = {page.page_no: page for page in document.pages}
    for row in rows:
        page = existing.get(row["page_no"]) or Page(document_id=document.id, page_no=row["page_no"])
        page.image_path, page.thumbnail_path = row["image_path"], row["thumbnail_path"]
        page.source, page.preprocess_version, page.preparation = row["source"], PREPROCESS_VERSION, preparation.key
        session.add(page)


def prepare_pages(settings: Settings, session: Session, document: Document, claimed: Path, decoder: Decoder,
                  preparation: Preparation) -> tuple[FileType, list[PreparedPage]]:
    """Decode and store the pages of a document already recorded (classify preparing them again for its model)."""
    file_type, pages, rows = decode_pages(settings, document.sha256, claimed, decoder, preparation)
    record_pages(session, document, rows, preparation)
    return file_type, pages


def intake(settings: Settings, claim: Claim, decoder: Decoder) -> IntakeResult | None:
    """Turn one claimed file into stored pages; None when the file was handled, or is being handled, by another run.

    The claim is locked while it is processed: a redelivered or re-offered message for the same claim
    never decodes, records or moves it at the same time as the first.
    """
    with claim_lock(claim.claimed) as mine:
        if not mine:
            log.info("claim %s already handled or being handled by another run", claim_id(claim.claimed))
            return None
        try:
            return _intake(settings, claim, decoder)
        except (InstallationError, OperationalError) as exc:  # said here: Celery logs its retries at INFO only
            why = exc if isinstance(exc, InstallationError) else f"database unreachable ({type(exc.orig).__name__})"
            log.warning("claim %s stays claimed and is retried: %s", claim_id(claim.claimed), why)
            raise


def _intake(settings: Settings, claim: Claim, decoder: Decoder) -> IntakeResult | None:
    with metrics.stage("hash"):
        sha256 = sha256_file(claim.claimed)
    follow_document(sha256)
    with session_scope(settings.sqlalchemy_url) as session:
        document = document_by_sha(session, sha256)
        if document is not None and lifecycle.is_retry(document, claim):
            lifecycle.retry(session, document, claim)
            session.commit()
        if document is not None and document.current_path != str(claim.claimed):
            if document.status in DocumentStatus.FINAL and not Path(document.current_path).exists():
                # an earlier run recorded the outcome but died (or found the disk full) before the move
                settle(document, claim.claimed, held=True)
                return IntakeResult(sha256, document.status)
            return _record_duplicate(settings, session, document, claim)
        if document is not None and document.status == DocumentStatus.DECODED and document.pages and \
                all(Path(page.image_path).is_file() for page in document.pages):
            # Pages are committed with the status: an earlier run decoded this claim, but its classify
            # message may be gone (a broker restarted without persistence). Queue it again, decode nothing.
            log.info("document %s already decoded; queued for classification again", sha256[:12])
            return IntakeResult(sha256, DocumentStatus.DECODED, classify=True)
        preparation = champion(settings).preparation
        try:
            try:
                file_type, pages, rows = decode_pages(settings, sha256, claim.claimed, decoder, preparation)
            except IngestError as error:
                quarantine(settings, session, document or lifecycle.receive(session, claim, sha256), claim.claimed,
                           error)
                return IntakeResult(sha256, DocumentStatus.QUARANTINED)
            # One transaction for the document, its pages and its status, begun only now that the file decoded:
            # a writer on SQLite holds the whole database, so it must not wait on a decoder meanwhile.
            document = document or lifecycle.receive(session, claim, sha256)
            record_pages(session, document, rows, preparation)
            lifecycle.decoded(session, document, file_type.value, pages[0].metadata, len(pages))
            session.commit()
        except IntegrityError:  # the same bytes recorded by another worker a moment ago
            session.rollback()
            return _record_duplicate(settings, session, document_by_sha(session, sha256), claim)
        except InstallationError:
            log.error("document %s stays claimed: the installation is at fault, not the file", sha256[:12])
            raise
    log.info("document %s decoded: %d page(s)", sha256[:12], len(pages))
    return IntakeResult(sha256, DocumentStatus.DECODED, classify=True)


def give_up(settings: Settings, claim: Claim, error: BaseException) -> None:
    """Quarantine a claim whose task failed for good (retries spent), so no file waits in `.claimed` forever.

    The reason is `internal_error`: the file may be fine. Dropping it into an inbox again retries it.
    """
    with claim_lock(claim.claimed) as mine:
        if mine:  # else another run holds the claim now and decides its fate
            _give_up(settings, claim, error)


def _give_up(settings: Settings, claim: Claim, error: BaseException) -> None:
    claimed = claim.claimed
    sha256 = sha256_file(claimed)
    with session_scope(settings.sqlalchemy_url) as session:
        document = document_by_sha(session, sha256)
        if document is None:
            document = lifecycle.receive(session, claim, sha256)
        elif document.status in DocumentStatus.FINAL:
            settle(document, claimed, held=True)
            return
        quarantine(settings, session, document, claimed,
                    IngestError(Reason.INTERNAL_ERROR, f"{type(error).__name__}: {str(error)[:500]}"))
