"""Reviewed pages out of the database as a labelled folder the trainer reads (stage 2, nightly retraining)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from model_training.manifest import LABELS
from worker.db.queries import ReviewedPage, reviewed_pages


def write_labelled_folder(pages: Sequence[ReviewedPage], folder: Path) -> int:
    """Each page's stored model input and its review's labels as `labels.csv`; returns the page count.

    Pages whose image is gone from disk are left out rather than failing the whole export.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for page in pages:
        if not Path(page.image_path).exists():
            continue
        name = f"page-{page.page_id:08d}.png"
        shutil.copyfile(page.image_path, folder / name)
        rows.append({"file": name, **{label: int(label in page.labels) for label in LABELS}})
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", *LABELS])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def export_reviewed(session: Session, folder: Path) -> int:
    """Every reviewed page with its newest review's labels."""
    return write_labelled_folder(reviewed_pages(session), folder)
