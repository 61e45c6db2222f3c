"""What the database holds, counted straight from its tables."""

from __future__ import annotations

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from worker.db.models import Document, Page, Prediction


def document_counts(url: str) -> dict[str, int]:
    """Documents by status, plus "pages", "predictions" and "predicted_pages" (pages with at least one)."""
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            by_status = dict(session.execute(select(Document.status, func.count()).group_by(Document.status)).all())
            return {**by_status,
                    "pages": session.scalar(select(func.count()).select_from(Page)),
                    "predictions": session.scalar(select(func.count()).select_from(Prediction)),
                    "predicted_pages": session.scalar(select(func.count(func.distinct(Prediction.page_id))))}
    finally:
        engine.dispose()
