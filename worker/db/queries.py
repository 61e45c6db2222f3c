"""Read-side queries shared by the CLI and, later, the review API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from worker.db.models import Document, Page, Prediction


def result_rows(session: Session) -> list[dict[str, Any]]:
    """One row per page with its newest prediction; a document without pages (quarantined) is one row."""
    documents = session.scalars(
        select(Document)
        .options(selectinload(Document.pages).selectinload(Page.predictions).selectinload(Prediction.model_version))
        .order_by(Document.received_at, Document.id)
    ).all()
    rows: list[dict[str, Any]] = []
    for document in documents:
        base = {"sha256": document.sha256, "path": document.path, "status": document.status,
                "reason": document.reason, "file_type": document.file_type}
        if not document.pages:
            rows.append({**base, "page": None, "model_version": None, "probabilities": {}, "labels": []})
        for page in document.pages:
            newest = max(page.predictions, key=lambda p: (p.created_at, p.id), default=None)
            rows.append({
                **base,
                "page": page.page_no,
                "model_version": newest.model_version.name if newest else None,
                "probabilities": dict(newest.probabilities) if newest else {},
                "labels": list(newest.labels) if newest else [],
            })
    return rows
