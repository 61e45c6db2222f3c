"""The Celery app: broker from settings, the ingest/infer/train queues, the nightly schedule, reliability options.

Built on first use (`get_app`), not at import: the watcher only sends tasks by name and never
loads the task modules, the decoders or the model.

Late acks, reject-on-worker-lost and prefetch 1 mean a task whose worker dies is delivered again
rather than lost; every task is idempotent on the document's sha256, so a second delivery is harmless.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from celery import Celery
from kombu import Queue

from worker.filequeue import TRANSPORT
from worker.settings import Settings, get_settings, parse_crontab

if TYPE_CHECKING:
    from ingest.watch import Claim

QUEUES = ("ingest", "infer", "train")
INTAKE_TASK = "ecg_intake.intake_file"
CLASSIFY_TASK = "ecg_intake.classify_document"
DIGITISE_TASK = "ecg_intake.digitise_document"
RETRAIN_TASK = "ecg_intake.retrain"
TASK_ROUTES = {
    INTAKE_TASK: {"queue": "ingest"},
    CLASSIFY_TASK: {"queue": "infer"},
    DIGITISE_TASK: {"queue": "ingest"},  # CPU work on the original, like decoding
    RETRAIN_TASK: {"queue": "train"},
}


def beat_schedule(settings: Settings) -> dict:
    """The nightly retraining at `retrain_schedule` (crontab fields) in `timezone`."""
    return {"nightly-retrain": {"task": RETRAIN_TASK, "options": {"queue": "train"},
                                "schedule": parse_crontab(settings.retrain_schedule)}}


def broker_options(settings: Settings) -> dict:
    if settings.embedded_broker:
        queue_dir = settings.broker_dir / "queue"
        processed_dir = settings.broker_dir / "processed"
        control_dir = settings.broker_dir / "control"  # kombu's default is ./control in the working directory
        for folder in (queue_dir, processed_dir, control_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return {"data_folder_in": str(queue_dir), "data_folder_out": str(queue_dir),
                "processed_folder": str(processed_dir), "control_folder": str(control_dir), "store_processed": False,
                "polling_interval": 0.1}  # kombu's default 1 s idles a worker after every empty look
    return {"visibility_timeout": settings.visibility_timeout}


def create_celery(settings: Settings, with_tasks: bool = True) -> Celery:
    """`with_tasks=False` gives a producer: it can send tasks by name but never imports them."""
    app = Celery("ecg_intake", broker=settings.celery_broker_url, include=["worker.tasks"] if with_tasks else [],
                 set_as_current=with_tasks)
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="ingest",
        task_routes=TASK_ROUTES,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport=TRANSPORT if settings.embedded_broker else None,  # messages appear whole (filequeue.py)
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,  # keep the CLI's own output on the terminal
        # The file transport has no broadcast exchange; remote control needs one.
        worker_enable_remote_control=not settings.embedded_broker,
        worker_send_task_events=False,
        timezone=settings.timezone,
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(settings.home_dir / "celerybeat-schedule"),
    )
    return app


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The worker's app, with the task modules; set as current so the shared tasks bind to it."""
    app = create_celery(get_settings())
    app.set_current()
    app.set_default()
    return app


@lru_cache(maxsize=1)
def get_producer() -> Celery:
    return create_celery(get_settings(), with_tasks=False)


def submit_retrain(actor: str) -> None:
    """`ecg-intake retrain` without `--now`: one message for whichever worker consumes the train queue."""
    get_producer().send_task(RETRAIN_TASK, args=[actor], queue="train")


def submit_digitise(sha256: str) -> None:
    """After classification: the document's waveforms, on the ingest queue, sent by name through the producer
    (a task called in-process, as the tests call it, has no worker's app to send with)."""
    get_producer().send_task(DIGITISE_TASK, args=[sha256])


def submit_claim(claim: Claim) -> None:
    """The watcher's callback: one message per claimed file on the ingest queue, sent by task name."""
    get_producer().send_task(INTAKE_TASK, args=[claim.to_message()])


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue, as the broker counts them (Redis: the lists' lengths, summed over
    priorities; the file queue: its message files). A queue the broker has never seen holds none."""
    depths = {}
    with get_producer().connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=3)
        for queue in QUEUES:
            channel = connection.channel()
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except connection.channel_errors:
                depths[queue] = 0
            finally:
                channel.close()
    return depths
