"""Celery tasks: thin wrappers that hand work to `worker.intake` and `worker.classify`.

No task waits for another's result; `intake_file` enqueues `classify_document` and returns, and
`classify_document` enqueues `digitise_document` once the original lies in the archive.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from pathlib import Path

from celery import Task, shared_task
from celery.signals import task_postrun, task_prerun
from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy.exc import OperationalError

from ingest.correlation import KEY_DIGITS, working_on
from ingest.decode.isolated import Decoder
from ingest.reasons import InstallationError
from ingest.watch import Claim, claim_id
from worker.celery_app import CLASSIFY_TASK, DIGITISE_TASK, INTAKE_TASK, RETRAIN_TASK, submit_digitise
from worker.classify import classify
from worker.db.queries import document_by_sha
from worker.db.session import session_scope
from worker.intake import give_up, intake
from worker.serving import serving_engine
from worker.settings import get_settings

log = logging.getLogger(__name__)

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


class _IntakeTask(Task):
    def correlation_id(self, args: tuple) -> str:
        """The claim's id until the bytes are hashed (`intake` then follows the document)."""
        return claim_id(Claim.from_message(args[0]).claimed)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Retries spent or an unexpected error: quarantine as internal_error rather than leave the file claimed."""
        claim = Claim.from_message(args[0])
        if isinstance(exc, INSTALLATION_FAULTS):
            log.error("intake task %s gave up on an installation fault; claim %s stays and is retried at the "
                      "watcher's next offer: %s", task_id, claim_id(claim.claimed), exc)
            return
        log.error("intake task %s failed for good: %s", task_id, type(exc).__name__)
        give_up(get_settings(), claim, exc)


class _DocumentTask(Task):
    def correlation_id(self, args: tuple) -> str:
        return args[0][:KEY_DIGITS]


class _ClassifyTask(_DocumentTask):

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


_working_on: dict[tuple[str, int], ExitStack] = {}  # (task id, thread) -> the task's open `working_on` block


@task_prerun.connect
def _open_correlation(task_id: str = "", task: Task | None = None, args: tuple = (), **_: object) -> None:
    """Every line a document's task logs carries its correlation id, Celery's own about the task (retry,
    failure, the `on_failure` handlers) included: the block opens before the task and closes after them."""
    correlation_id = getattr(task, "correlation_id", None)
    if correlation_id is None:
        return
    try:
        key = correlation_id(args)
    except (IndexError, KeyError, TypeError):  # a malformed message: the task itself says what is wrong
        return
    block = _working_on[task_id, threading.get_ident()] = ExitStack()  # a redelivery may run beside it
    block.enter_context(working_on(key))


@task_postrun.connect
def _close_correlation(task_id: str = "", **_: object) -> None:
    block = _working_on.pop((task_id, threading.get_ident()), None)
    if block is not None:
        block.close()


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
    settings = get_settings()
    with serving_engine() as (engine, model_version_id):
        classified = classify(settings, engine, model_version_id, sha256, decoder_for_worker())
    if settings.digitise:
        submit_digitise(sha256)
    return classified


@shared_task(name=DIGITISE_TASK, base=_DocumentTask, **RETRY)
def digitise_document(sha256: str) -> int:
    """The document's waveforms; a failure here is logged by Celery and never touches the file. The digitiser
    (and the segmenter's torch) loads with the first of these tasks, not with every worker."""
    from worker.waveforms import digitise_document as store_waveforms

    return store_waveforms(get_settings(), sha256, decoder_for_worker())


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
