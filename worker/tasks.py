"""Celery tasks: thin wrappers that hand work to `worker.intake` and `worker.classify`.

No task waits for another's result; `intake_file` enqueues `classify_document` and returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from celery import Task, shared_task
from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy.exc import OperationalError

from ingest.decode.isolated import Decoder
from ingest.reasons import InstallationError
from ingest.watch import Claim, claim_id
from worker.celery_app import CLASSIFY_TASK, INTAKE_TASK, RETRAIN_TASK
from worker.classify import classify
from worker.db.queries import document_by_sha
from worker.db.session import session_scope
from worker.engine import Engine, load_engine
from worker.engine.batching import BatchingEngine
from worker.intake import give_up, intake
from worker.registry import champion_bundle
from worker.settings import get_settings

log = logging.getLogger(__name__)

_engine_lock = threading.Lock()
_decoders = threading.local()
# The machine's fault, never the file's: a broker or database that is down, a full disk (InstallationError).
INSTALLATION_FAULTS = (InstallationError, OperationalError, BrokerUnreachable)
RETRY = {"autoretry_for": INSTALLATION_FAULTS, "retry_backoff": True, "max_retries": 8}


def decoder_for_worker() -> Decoder:
    """This thread's decoder (a long-lived child process when isolation is on); one per pool thread."""
    decoder = getattr(_decoders, "decoder", None)
    if decoder is None:
        settings = get_settings()
        decoder = _decoders.decoder = Decoder(settings.decode_limits(), isolated=settings.decode_isolation)
    return decoder


@dataclass
class _Serving:
    """One loaded champion: its engine, its model_versions id, and how many tasks are using it now."""

    engine: Engine
    model_version_id: int
    users: int = 0


_serving: _Serving | None = None
_callers = 1
_checked_at = 0.0


def _current() -> _Serving:
    """The champion's engine; the registry is asked again every `champion_check_seconds` and a new champion
    is loaded in place. Call with `_engine_lock` held."""
    global _serving, _checked_at
    settings = get_settings()
    if _serving is not None and time.monotonic() - _checked_at < settings.champion_check_seconds:
        return _serving
    model_version_id, bundle_dir = champion_bundle(settings.sqlalchemy_url, settings.bundle_dir)
    _checked_at = time.monotonic()
    if _serving is None or _serving.model_version_id != model_version_id:
        engine = load_engine(bundle_dir, settings.engine, settings.torch_threads, settings.batch_size,
                             cache_dir=settings.engine_cache_dir)
        old, _serving = _serving, _Serving(BatchingEngine(engine, settings.batch_size, settings.max_wait_ms, _callers),
                                           model_version_id)
        if old is not None:
            log.info("now serving %s (was %s); tasks already running finish on the old model",
                     engine.manifest.model_version, old.engine.manifest.model_version)
            _retire_if_idle(old)
    return _serving


def _retire_if_idle(serving: _Serving) -> None:
    if serving is not _serving and serving.users == 0:
        serving.engine.close()


def engine_for_worker(callers: int = 1) -> tuple[Engine, int]:
    """Load the champion now (a worker does this before it takes tasks) and return it with its version id.

    `callers` is how many classify tasks may run at once (the thread pool's size); their pages are
    micro-batched into shared forward passes.
    """
    global _callers
    with _engine_lock:
        _callers = callers
        serving = _current()
    return serving.engine, serving.model_version_id


@contextmanager
def serving_engine() -> Iterator[tuple[Engine, int]]:
    """The champion for one task: a task that started on a model finishes on it, even if a new champion
    is loaded meanwhile; the old engine is closed once its last task is done."""
    with _engine_lock:
        serving = _current()
        serving.users += 1
    try:
        yield serving.engine, serving.model_version_id
    finally:
        with _engine_lock:
            serving.users -= 1
            _retire_if_idle(serving)


class _IntakeTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Retries spent or an unexpected error: quarantine as internal_error rather than leave the file claimed."""
        claim = Claim.from_message(args[0])
        if isinstance(exc, INSTALLATION_FAULTS):
            log.error("intake task %s gave up on an installation fault; claim %s stays and is retried at the "
                      "watcher's next offer: %s", task_id, claim_id(claim.claimed), exc)
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
    with serving_engine() as (engine, model_version_id):
        return classify(get_settings(), engine, model_version_id, sha256)


@shared_task(name=RETRAIN_TASK)
def retrain_models(actor: str = "schedule") -> dict:
    """The nightly job on the train queue; a second run while one holds the lock is refused, not queued."""
    from worker.locks import LockHeld
    from worker.retrain import run_retrain

    try:
        return run_retrain(get_settings(), actor)
    except LockHeld as exc:
        log.warning("nightly retraining refused: %s", exc)
        return {"status": "refused", "reason": str(exc)}
