"""A document's life, owned in one place: received -> decoded -> done | quarantined.

Every status change goes through `advance`, which refuses a move the flow does not allow and
records it as an event. Duplicates (the same bytes again) and retries (an `internal_error`
document dropped in again) are the two side roads; both are events here too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from ingest.reasons import IngestError, Reason
from ingest.watch import Claim
from worker.db.models import Document, DocumentStatus, Event

RECEIVED, DECODED, DONE, QUARANTINED = (DocumentStatus.RECEIVED, DocumentStatus.DECODED, DocumentStatus.DONE,
                                        DocumentStatus.QUARANTINED)
MOVES: dict[tuple[str, str], str] = {
    (RECEIVED, DECODED): "decoded",
    (DECODED, DECODED): "decoded_again",  # a redelivered intake task: same pages, written over
    (RECEIVED, QUARANTINED): "quarantined",
    (DECODED, QUARANTINED): "quarantined",  # classify failed for good
    (DECODED, DONE): "classified",
    (QUARANTINED, RECEIVED): "retried",
}


class InvalidMove(RuntimeError):
    """A status change the flow does not allow: a bug, never a file's fault."""


def advance(session: Session, document: Document, to: str, **details: Any) -> None:
    """Move `document` to status `to` and record the event; the caller commits."""
    action = MOVES.get((document.status, to))
    if action is None:
        raise InvalidMove(f"document {document.sha256[:12]} cannot go from {document.status} to {to}")
    document.status = to
    if to in DocumentStatus.FINAL:
        document.processed_at = datetime.now(UTC)
    session.add(Event(action=action, document_id=document.id, details=details))


def receive(session: Session, claim: Claim, sha256: str) -> Document:
    """A new document for a claimed file (flushed, so it has an id; the caller commits)."""
    document = Document(sha256=sha256, path=str(claim.original), current_path=str(claim.claimed),
                        source=claim.source, size_bytes=claim.claimed.stat().st_size, status=RECEIVED)
    session.add(document)
    session.flush()
    return document


def is_retry(document: Document, claim: Claim) -> bool:
    """A file quarantined for our own failure, dropped in again by an operator, is processed afresh."""
    return (document.status == QUARANTINED and document.reason == Reason.INTERNAL_ERROR
            and document.current_path != str(claim.claimed))


def retry(session: Session, document: Document, claim: Claim) -> None:
    advance(session, document, RECEIVED, after=document.reason)
    document.reason, document.reason_message, document.processed_at = None, None, None
    document.current_path, document.path, document.source = str(claim.claimed), str(claim.original), claim.source


def quarantine(session: Session, document: Document, error: IngestError, stored_at: str) -> None:
    advance(session, document, QUARANTINED, reason=error.reason.value)
    document.reason, document.reason_message, document.current_path = error.reason.value, error.message, stored_at


def decoded(session: Session, document: Document, file_type: str, metadata: dict[str, Any], pages: int) -> None:
    advance(session, document, DECODED, pages=pages)
    document.file_type, document.source_metadata = file_type, metadata


def classified(session: Session, document: Document, stored_at: str, model_version: str, pages: int) -> None:
    advance(session, document, DONE, model_version=model_version, pages=pages)
    document.current_path = stored_at


def sighted_again(session: Session, original: Document, claim: Claim, stored_at: str) -> None:
    """The same bytes dropped again: a sighting of the first document, not a new one."""
    session.add(Event(action="duplicate_sighting", document_id=original.id,
                      details={"path": str(claim.original), "source": claim.source, "stored_at": stored_at}))
