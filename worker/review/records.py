"""What the review views read and write besides plain queries: the audit trail of every view and change,
reviews in the page's label order, and a page's thresholds and images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from worker import metrics
from worker.db import queries
from worker.db.models import Review
from worker.review.auth import SessionUser
from worker.review.schemas import WAVEFORM_MEASUREMENTS, WaveformSummary
from worker.serving import serving_bundle

ImageKind = Literal["original", "cleaned", "gradcam", "trace"]
IMAGE_KINDS: tuple[str, ...] = get_args(ImageKind)
WHOLE_SHEETS = ("original", "trace")  # a whole sheet can show a printed header with the patient's name and id


def audit(session: Session, user: SessionUser | str, action: str, row: dict[str, Any] | None = None,
          **details: Any) -> None:
    """One `events` row: who (`actor`), what (`action`), on which document and page, and the details."""
    actor = user.name if isinstance(user, SessionUser) else user[:128]
    queries.record_event(session, actor=actor, action=action,
                         document_id=row.get("document_id") if row else None,
                         page_id=row.get("page_id") if row else None,
                         details={k: v for k, v in details.items() if v is not None})


def page_or_404(session: Session, page_id: int) -> dict[str, Any]:
    row = queries.page_result(session, page_id)
    if row is None:
        raise HTTPException(404, "no such page")
    return row


def page_labels(row: dict[str, Any], serving: Sequence[str]) -> list[str]:
    """The labels a page is shown and reviewed with: its model's (in that model's order), then any other the
    serving model reads; the serving model's alone for a page no model has read yet."""
    return list(dict.fromkeys([*row.get("probabilities", {}), *serving]))


def thresholds(session: Session, row: dict[str, Any], labels: Sequence[str]) -> dict[str, float]:
    """The thresholds the page's model decided with, from its model_versions manifest; 0.5 where none."""
    stored: dict[str, Any] = {}
    version = queries.model_version_named(session, row["model_version"]) if row.get("model_version") else None
    if version is not None:
        stored = (version.manifest or {}).get("thresholds") or {}
    return {label: float(stored.get(label, 0.5)) for label in labels}


def save_review(session: Session, user: SessionUser, row: dict[str, Any], labels: list[str],
                comment: str | None, serving: Sequence[str]) -> Review:
    """A review with its labels in the page's label order, and its audit event (the model's labels beside)."""
    allowed = page_labels(row, serving)
    unknown = set(labels) - set(allowed)
    if unknown:
        raise HTTPException(422, f"unknown labels {sorted(unknown)}; this page is read for {', '.join(allowed)}")
    if row.get("page_id") is None:
        raise HTTPException(404, "no such page")
    ordered = [label for label in allowed if label in labels]
    review = queries.add_review(session, page_id=row["page_id"], reviewer_id=user.id, labels=ordered,
                                comment=(comment or "").strip() or None)
    audit(session, user, "review", row, review_id=review.id, labels=ordered, model_labels=row.get("model_labels"),
          model_version=row.get("model_version"), commented=review.comment is not None)
    metrics.review_saved()
    return review


def image_kinds(user: SessionUser) -> tuple[str, ...]:
    """The thumbnail of the original sheet and the trace (drawn on the whole cleaned sheet) can show a printed
    header with the patient's name and id, so viewers get the cleaned trace area and its Grad-CAM only."""
    return tuple(kind for kind in IMAGE_KINDS if user.sees_identifiers or kind not in WHOLE_SHEETS)


def stored_image(row: dict[str, Any], kind: str) -> Path:
    """The stored file of an original (thumbnail), cleaned or trace page; 404 when it is gone."""
    value = row.get({"original": "thumbnail_path", "trace": "trace_path"}.get(kind, "image_path"))
    path = Path(value) if value else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"the {kind} image of this page is not stored")
    return path


def model_bundle(session: Session, row: dict[str, Any], request: Request) -> Path:
    """The bundle of the model that read the page (Grad-CAM explains that model); the serving one otherwise."""
    version = queries.model_version_named(session, row["model_version"]) if row.get("model_version") else None
    return Path(version.bundle_path) if version is not None else serving_bundle(request.app.state.settings)


def waveform(session: Session, page_id: int) -> tuple[WaveformSummary | None, str | None]:
    """The page's stored waveform as the API shows it, and its trace image's path; (None, None) until stored."""
    reading = queries.waveform_reading(session, page_id)
    if reading is None:
        return None, None
    summary = WaveformSummary(method=reading.method, status=reading.status, message=reading.message,
                              layout=reading.layout,
                              measurements={key: getattr(reading, key) for key in WAVEFORM_MEASUREMENTS},
                              leads={row.lead: row.quality for row in queries.page_waveforms(session, page_id)})
    return summary, reading.trace_path
