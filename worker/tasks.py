"""Celery tasks: thin wrappers that hand work to `worker.intake` and `worker.classify`.

No task waits for another's result; `intake_file` enqueues `classify_document` and returns.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from celery import Task, shared_task
from sqlalchemy.exc import OperationalError

from ingest.decode.isolated import Decoder
from ingest.reasons import InstallationError
from ingest.watch import Claim, claim_id
from worker.celery_app import CLASSIFY_TASK, INTAKE_TASK
from worker.classify import classify, register_model_version
from worker.db.queries import document_by_sha
from worker.db.session import session_scope
from worker.engine import Engine, load_engine
from worker.engine.batching import BatchingEngine
from worker.intake import give_up, intake
from worker.settings import get_settings

log = logging.getLogger(__name__)

_engine: tuple[Engine, int] | None = None
_engine_lock = threading.Lock()
_decoders = threading.local()
INSTALLATION_FAULTS = (InstallationError, OperationalError)  # the machine's fault: never the file's
RETRY = {"autoretry_for": INSTALLATION_FAULTS, "retry_backoff": True, "max_retries": 8}


def decoder_for_worker() -> Decoder:
    """This thread's decoder (a long-lived child process when isolation is on); one per pool thread."""
    decoder = getattr(_decoders, "decoder", None)
    if decoder is None:
        settings = get_settings()
        decoder = _decoders.decoder = Decoder(settings.decode_limits(), isolated=settings.decode_isolation)
    return decoder


def engine_for_worker(callers: int = 1) -> tuple[Engine, int]:
    """The process's engine, loaded once, and the id of its model version row.

    `callers` is how many classify tasks may run at once (the thread pool's size); their pages are
    micro-batched into shared forward passes.
    """
    global _engine
    with _engine_lock:
        if _engine is None:
            settings = get_settings()
            engine = load_engine(settings.bundle_dir, settings.engine, settings.torch_threads, settings.batch_size,
                                 cache_dir=settings.engine_cache_dir)
            batching = BatchingEngine(engine, settings.batch_size, settings.max_wait_ms, callers)
            _engine = batching, register_model_version(settings.sqlalchemy_url, engine.manifest, settings.bundle_dir)
    return _engine


class _IntakeTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Retries spent or an unexpected error: quarantine as internal_error rather than leave the file claimed."""
        claim = Claim.from_message(args[0])
        if isinstance(exc, INSTALLATION_FAULTS):
            log.error("intake task %s gave up on an installation fault; claim %s stays and is retried at the "
                      "next start: %s", task_id, claim_id(claim.claimed), exc)
            return
        log.error("intake task %s failed for good: %s", task_id, type(exc).__name__)
        give_up(get_settings(), claim, exc)


class _ClassifyTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        (sha256,) = args
        if isinstance(exc, INSTALLATION_FAULTS):
            log.error("classify task %s gave up on an installation fault; document %s stays claimed: %s",
                      task_id, sha256[:12], exc)
            return
        log.error("classify task %s failed for good: %s", task_id, type(exc).__name__)
        settings = get_settings()
        with session_scope(settings.sqlalchemy_url) as session:
            document = document_by_sha(session, sha256)
            if document is None:
                return
            claim = Claim(Path(document.current_path), Path(document.path), document.source)
        give_up(settings, claim, exc)


@shared_task(name=INTAKE_TASK, base=_IntakeTask, **RETRY)
def intake_file(claim: dict[str, str]) -> str | None:
    result = intake(get_settings(), Claim.from_message(claim), decoder_for_worker())
    if result is None:
        return None
    if result.classify:
        classify_document.delay(result.sha256)
    return result.status


@shared_task(name=CLASSIFY_TASK, base=_ClassifyTask, **RETRY)
def classify_document(sha256: str) -> int:
    engine, model_version_id = engine_for_worker()
    return classify(get_settings(), engine, model_version_id, sha256)
