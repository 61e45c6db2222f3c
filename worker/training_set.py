"""Reviewed pages out of the database as a labelled folder the trainer reads (stage 2, nightly retraining)."""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from model_training.manifest import Manifest
from worker.db.queries import ReviewedPage, reviewed_pages

log = logging.getLogger(__name__)


def write_labelled_folder(pages: Sequence[ReviewedPage], folder: Path, manifest: Manifest) -> int:
    """Each page's stored model input and its review's labels, one column per label of `manifest` (the model
    to be fine-tuned), as `labels.csv`; returns the page count.

    Only pages prepared for that model's geometry go in (a page made for another input size would teach it
    nothing it can use); pages whose image is gone from disk are left out rather than failing the export.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = manifest.preparation.key
    labels = list(manifest.labels)
    rows, other = [], 0
    for page in pages:
        if page.preparation != key:
            other += 1
            continue
        if not Path(page.image_path).exists():
            continue
        name = f"page-{page.page_id:08d}.png"
        shutil.copyfile(page.image_path, folder / name)
        rows.append({"file": name, **{label: int(label in page.labels) for label in labels}})
    if other:
        log.info("%d reviewed page(s) were prepared for another model's geometry and are left out", other)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", *labels])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def export_reviewed(session: Session, folder: Path, manifest: Manifest) -> int:
    """Every reviewed page with its newest review's labels, for the model of `manifest`."""
    return write_labelled_folder(reviewed_pages(session), folder, manifest)
