"""The last step of every document: its original moves to the place the database already names."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ingest.files import claim_lock, move, write_reason
from ingest.reasons import InstallationError, Reason
from worker.db.models import Document, DocumentStatus

log = logging.getLogger(__name__)


LOCK_WAIT = 30.0  # seconds to wait for another delivery of the same claim to let go of it


def settle(document: Document, claimed: Path, held: bool = False) -> Path | None:
    """Move `claimed` to `document.current_path` (archive or quarantine), once; None if already done.

    The claim is locked for the move (`held`: the caller holds it already), so a second delivery of the
    same claim cannot copy it to the archive a second time across file systems. A move that fails for the
    machine's sake (disk full, folder not writable) is an InstallationError: the file stays claimed, the
    outcome stays recorded, and the next delivery or re-offer of the claim finishes the move.
    """
    if held:
        return _move(document, claimed)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        with claim_lock(claimed) as mine:
            if mine:
                return _move(document, claimed)
        if not claimed.exists() or time.monotonic() > deadline:
            return None  # moved by the other delivery, or left for the next re-offer of the claim
        time.sleep(0.1)


def _move(document: Document, claimed: Path) -> Path | None:
    dest = Path(document.current_path)
    if not claimed.exists():
        return None
    try:
        if document.status == DocumentStatus.QUARANTINED:
            write_reason(dest, Reason(document.reason), document.reason_message or "", sha256=document.sha256,
                         original_path=document.path, source=document.source)
        final = move(claimed, dest)
    except FileNotFoundError:
        if claimed.exists():
            raise
        return None  # another delivery of the same claim moved it a moment ago
    except OSError as exc:  # the message names no file: file names can carry patient identifiers
        raise InstallationError(f"document {document.sha256[:12]} stays claimed: cannot move it into "
                                f"{dest.parent}: {exc.strerror or type(exc).__name__}") from exc
    log.info("document %s %s", document.sha256[:12], "quarantined" if document.status == "quarantined" else "archived")
    return final
