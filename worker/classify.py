"""Step two: classify a document's stored pages, write the predictions, and archive the original."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.decode.isolated import Decoder
from ingest.files import destination
from ingest.reasons import IngestError
from model_training.manifest import findings
from worker import lifecycle, metrics
from worker.db.models import Document, DocumentStatus, Page, Prediction
from worker.db.queries import document_by_sha, predicted_page_ids
from worker.db.session import session_scope
from worker.disposition import settle
from worker.engine import Engine
from worker.intake import prepare_pages, quarantine
from worker.settings import Settings

log = logging.getLogger(__name__)


def classify(settings: Settings, engine: Engine, model_version_id: int, sha256: str, decoder: Decoder) -> int:
    """Predict every page of the document that has no prediction from this model; returns how many.

    Pages prepared for another model (a champion promoted between intake and now) are prepared again from
    the original for this one first; an original that no longer decodes is quarantined with the reason.
    """
    with session_scope(settings.sqlalchemy_url) as session:
        document = document_by_sha(session, sha256)
        if document is None:
            raise LookupError(f"no document {sha256[:12]}")
        claimed = Path(document.current_path)
        if document.status in DocumentStatus.FINAL:
            return 0
        done = predicted_page_ids(session, model_version_id, [p.id for p in document.pages])
        todo = [page for page in document.pages if page.id not in done]
        preparation = engine.manifest.preparation
        if any(page.preparation != preparation.key or not Path(page.image_path).is_file() for page in todo):
            if not _prepare_again(settings, session, document, claimed, decoder, engine):
                return 0
            todo = [page for page in document.pages if page.id not in done]
        if todo:
            images = np.stack([cv2.imread(page.image_path, cv2.IMREAD_GRAYSCALE) for page in todo])
            started = time.perf_counter()
            with metrics.stage("inference"):
                probabilities = engine.predict(images)
            record_predictions(session, todo, probabilities, engine, model_version_id,
                               (time.perf_counter() - started) * 1000 / len(todo))
        lifecycle.classified(session, document, str(destination(settings.archive_dir, sha256, claimed)),
                             engine.manifest.model_version, len(todo))
        try:
            session.commit()
        except IntegrityError:  # another worker stored the same predictions first; it also moves the file
            session.rollback()
            return 0
    if todo:
        metrics.pages_classified(engine.name, engine.manifest.model_version, len(todo))
    settle(document, claimed)
    log.info("document %s classified: %d page(s) with %s", sha256[:12], len(todo), engine.manifest.model_version)
    return len(todo)


def record_predictions(session: Session, pages: list[Page], probabilities: np.ndarray, engine: Engine,
                       model_version_id: int, latency_ms: float) -> None:
    """One prediction row per page: its probabilities by the engine manifest's labels and the findings flagged."""
    labels = engine.manifest.labels
    for page, row, page_labels in zip(pages, probabilities, findings(probabilities, engine.manifest), strict=True):
        session.add(Prediction(page_id=page.id, model_version_id=model_version_id,
                               probabilities={label: float(p) for label, p in zip(labels, row, strict=True)},
                               labels=page_labels, engine=engine.name, latency_ms=latency_ms))


def _prepare_again(settings: Settings, session: Session, document: Document, claimed: Path, decoder: Decoder,
                   engine: Engine) -> bool:
    """Make the document's pages again for `engine`'s model; False when the original was quarantined."""
    manifest = engine.manifest
    log.info("document %s: its pages were prepared for another model; preparing them again for %s",
             document.sha256[:12], manifest.model_version)
    try:
        prepare_pages(settings, session, document, claimed, decoder, manifest.preparation)
    except IngestError as error:
        quarantine(settings, session, document, claimed, IngestError(error.reason, (
            f"its pages were prepared for another model and could not be prepared again for "
            f"{manifest.model_version}: {error.message}")))
        return False
    session.flush()
    return True
