"""Reviewed pages out of the database as a labelled folder the trainer reads (stage 2, nightly retraining)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from model_training.manifest import LABELS
from worker.db.models import Page, Review


def export_reviewed(session: Session, folder: Path) -> int:
    """Each reviewed page's stored model input and its latest review's labels; returns the page count."""
    folder.mkdir(parents=True, exist_ok=True)
    latest: dict[int, Review] = {}
    for review in session.scalars(select(Review).order_by(Review.created_at, Review.id)):
        latest[review.page_id] = review
    rows = []
    for page_id, review in sorted(latest.items()):
        page = session.get(Page, page_id)
        if page is None or not Path(page.image_path).exists():
            continue
        name = f"page-{page_id:08d}.png"
        shutil.copyfile(page.image_path, folder / name)
        rows.append({"file": name, **{label: int(label in review.labels) for label in LABELS}})
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", *LABELS])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
