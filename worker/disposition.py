"""The last step of every document: its original moves to the place the database already names."""

from __future__ import annotations

import logging
from pathlib import Path

from ingest.files import move, write_reason
from ingest.reasons import Reason
from worker.db.models import Document, DocumentStatus

log = logging.getLogger(__name__)


def settle(document: Document, claimed: Path) -> Path | None:
    """Move `claimed` to `document.current_path` (archive or quarantine), once; None if already done."""
    dest = Path(document.current_path)
    if not claimed.exists():
        return None
    if document.status == DocumentStatus.QUARANTINED:
        write_reason(dest, Reason(document.reason), document.reason_message or "", sha256=document.sha256,
                     original_path=document.path, source=document.source)
    final = move(claimed, dest)
    log.info("document %s %s", document.sha256[:12], "quarantined" if document.status == "quarantined" else "archived")
    return final
