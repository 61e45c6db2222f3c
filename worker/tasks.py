"""Celery tasks: thin wrappers that hand work to `worker.intake` and `worker.classify`.

No task waits for another's result; `intake_file` enqueues `classify_document` and returns.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import OperationalError

from ingest.watch import Claim
from worker.celery_app import app
from worker.classify import classify, register_model_version
from worker.engine import Engine, load_engine
from worker.intake import intake
from worker.settings import get_settings

log = logging.getLogger(__name__)

_engine: tuple[Engine, int] | None = None
RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": True, "max_retries": 8}


def engine_for_worker() -> tuple[Engine, int]:
    """The process's engine, loaded once, and the id of its model version row."""
    global _engine
    if _engine is None:
        settings = get_settings()
        engine = load_engine(settings.bundle_dir, settings.engine, settings.torch_threads, settings.batch_size)
        _engine = engine, register_model_version(settings.sqlalchemy_url, engine.manifest, settings.bundle_dir)
    return _engine


@app.task(name="ecg_intake.intake_file", **RETRY)
def intake_file(claimed: str, original: str, source: str) -> str | None:
    result = intake(get_settings(), Claim(Path(claimed), Path(original), source))
    if result is None:
        return None
    if result.classify:
        classify_document.delay(result.sha256)
    return result.status


@app.task(name="ecg_intake.classify_document", **RETRY)
def classify_document(sha256: str) -> int:
    engine, model_version_id = engine_for_worker()
    return classify(get_settings(), engine, model_version_id, sha256)


def submit_claim(claim: Claim) -> None:
    """The watcher's callback: one message per claimed file on the ingest queue."""
    intake_file.delay(str(claim.claimed), str(claim.original), claim.source)
