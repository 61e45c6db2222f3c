"""Step two: classify a document's stored pages, write the predictions, and archive the original."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ingest.files import destination
from model_training.bundle import Manifest
from worker.db.models import Document, DocumentStatus, ModelVersion, Prediction
from worker.db.session import session_scope
from worker.disposition import settle
from worker.engine import Engine
from worker.settings import Settings

log = logging.getLogger(__name__)


def register_model_version(url: str, manifest: Manifest, bundle_dir: Path) -> int:
    """The id of the bundle's row in model_versions, created on first use (champion if there is none)."""
    for _attempt in range(3):
        with session_scope(url) as session:
            found = session.scalar(select(ModelVersion).where(ModelVersion.name == manifest.model_version))
            if found is not None:
                return found.id
            has_champion = session.scalar(select(ModelVersion.id).where(ModelVersion.status == "champion"))
            row = ModelVersion(name=manifest.model_version, bundle_path=str(bundle_dir),
                               manifest=manifest.model_dump(mode="json"), metrics=manifest.metrics,
                               status="candidate" if has_champion else "champion")
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # registered by another worker at the same moment
                session.rollback()
                continue
            return row.id
    raise RuntimeError(f"could not register model version {manifest.model_version}")


def classify(settings: Settings, engine: Engine, model_version_id: int, sha256: str) -> int:
    """Predict every page of the document that has no prediction from this model; returns how many."""
    labels = engine.manifest.labels
    with session_scope(settings.sqlalchemy_url) as session:
        document = session.scalar(select(Document).where(Document.sha256 == sha256))
        if document is None:
            raise LookupError(f"no document {sha256[:12]}")
        claimed = Path(document.current_path)
        if document.status in DocumentStatus.FINAL:
            return 0
        done = set(session.scalars(
            select(Prediction.page_id).where(Prediction.model_version_id == model_version_id,
                                             Prediction.page_id.in_([p.id for p in document.pages]))))
        todo = [page for page in document.pages if page.id not in done]
        if todo:
            images = np.stack([cv2.imread(page.image_path, cv2.IMREAD_GRAYSCALE) for page in todo])
            started = time.perf_counter()
            probabilities = engine.predict(images)
            latency_ms = (time.perf_counter() - started) * 1000 / len(todo)
            for page, row in zip(todo, probabilities, strict=True):
                scores = {label: float(p) for label, p in zip(labels, row, strict=True)}
                session.add(Prediction(
                    page_id=page.id, model_version_id=model_version_id, probabilities=scores,
                    labels=[label for label in labels if scores[label] >= engine.manifest.threshold(label)],
                    engine=engine.name, latency_ms=latency_ms))
        document.status = DocumentStatus.DONE
        document.processed_at = datetime.now(UTC)
        document.current_path = str(destination(settings.archive_dir, sha256, claimed))
        try:
            session.commit()
        except IntegrityError:  # another worker stored the same predictions first; it also moves the file
            session.rollback()
            return 0
    settle(document, claimed)
    log.info("document %s classified: %d page(s) with %s", sha256[:12], len(todo), engine.manifest.model_version)
    return len(todo)
