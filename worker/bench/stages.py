"""The pipeline's work per page, stage by stage, each measured alone in this process: the bound that holds.

`bench pipeline` sums these costs (core-ms per page) into the pages/s two cores could reach if nothing
else were spent: `cores / sum`. Every stage calls the worker's own functions on the same files, so the
bound counts the work the pipeline must do and nothing it need not; what the running pipeline spends
beyond it (Celery's dispatch, process hops, waiting, polling) is what its efficiency against the bound says.

CPU time is counted in this process (`time.process_time`, OpenCV on one thread as in the decoder
processes); the stages that talk to a server (database and queue) add the CPU time of the machine's
PostgreSQL, Redis and RabbitMQ processes (from /proc), so the server's share of each commit and message is
in them too.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from ingest.decode import decode
from ingest.files import sha256_file
from ingest.page import PreparedPage
from ingest.watch import Claim, Inbox, Watcher
from worker import lifecycle
from worker.celery_app import CLASSIFY_TASK, INTAKE_TASK, create_celery
from worker.classify import record_predictions
from worker.db.queries import document_by_sha, predicted_page_ids
from worker.db.session import session_scope
from worker.engine import load_engine
from worker.intake import record_pages, store_pages
from worker.serving import champion
from worker.settings import Settings

STAGES = ("watch_claim", "hash", "decode", "clean", "page_files", "database", "queue", "inference")
BENCH_QUEUE = "bench-hops"  # a queue no worker consumes


SERVERS = ("postgres", "redis-server", "beam.smp")  # PostgreSQL, Redis and RabbitMQ processes, by name


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores), from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / 100  # USER_HZ is 100 on Linux


def server_seconds() -> float:
    """CPU seconds spent so far by this machine's database and broker server processes, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if name.startswith(SERVERS):
            total += int(rest[11]) + int(rest[12])  # utime, stime
    return total / 100


def _own_and_servers() -> float:
    return time.process_time() + server_seconds()


@contextmanager
def _cpu(totals: dict[str, float], stage: str, servers: bool = False) -> Iterator[None]:
    clock = _own_and_servers if servers else time.process_time
    started = clock()
    yield
    totals[stage] = totals.get(stage, 0.0) + clock() - started


def _each(items: list, work: Callable) -> list:
    return [work(item) for item in items]


def stage_costs(files: list[Path], settings: Settings, engine_kind: str, batch_size: int, work: Path) -> dict:
    """Core-ms per page of each stage on `files` (copied, never moved), with `settings`' database and broker.

    The database must already have its schema; `work` is a scratch folder.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in the decoder processes: intake's parallelism is whole files
    try:
        return _stage_costs(files, settings, engine_kind, batch_size, work)
    finally:
        cv2.setNumThreads(threads)


def _stage_costs(files: list[Path], settings: Settings, engine_kind: str, batch_size: int, work: Path) -> dict:
    totals: dict[str, float] = {}
    inbox = work / "stage-inbox"
    inbox.mkdir(parents=True)
    for path in files:
        shutil.copy(path, inbox / path.name)
    watcher = Watcher([Inbox(inbox, "bench")], lambda _claim: None, stable_seconds=0, poll_interval=0.05,
                      use_events=False)
    with _cpu(totals, "watch_claim"):
        claims: list[Claim] = watcher.run_once()
    claimed = [claim.claimed for claim in claims]
    with _cpu(totals, "hash"):
        hashes = _each(claimed, sha256_file)
    limits = settings.decode_limits()
    with _cpu(totals, "decode"):
        decoded = _each(claimed, lambda path: decode(path, limits, working_copy=True))
    preparation = champion(settings).preparation
    with _cpu(totals, "clean"):
        prepared: list[list[PreparedPage]] = [_each(pages, preparation) for _, pages in decoded]
    with _cpu(totals, "page_files"):  # written by intake, the model input read back by classify
        rows = [store_pages(settings, sha, pages) for sha, pages in zip(hashes, prepared, strict=True)]
        inputs = np.stack([cv2.imread(row["image_path"], cv2.IMREAD_GRAYSCALE) for doc in rows for row in doc])
    pages = sum(len(p) for p in prepared)

    engine = load_engine(settings.bundle_dir, engine_kind, threads=settings.torch_threads, batch_size=batch_size,
                         cache_dir=settings.engine_cache_dir)
    engine.predict(inputs[:batch_size])  # warm-up
    with _cpu(totals, "inference"):
        probabilities = engine.predict(inputs)

    model_version_id = champion(settings).model_version_id
    with _cpu(totals, "database", servers=True):
        offset = 0
        for claim, sha, (file_type, _), document_pages, page_rows in zip(claims, hashes, decoded, prepared, rows,
                                                                         strict=True):
            _record_intake(settings, claim, sha, file_type.value, document_pages, page_rows, preparation)
            count = len(document_pages)
            _record_classify(settings, sha, probabilities[offset:offset + count], engine, model_version_id)
            offset += count

    producer = create_celery(settings, with_tasks=False)
    with _cpu(totals, "queue", servers=True):
        for claim, sha in zip(claims, hashes, strict=True):
            producer.send_task(INTAKE_TASK, args=[claim.to_message()], queue=BENCH_QUEUE)
            producer.send_task(CLASSIFY_TASK, args=[sha], queue=BENCH_QUEUE)
        with producer.connection_for_read() as connection:
            hops = connection.SimpleQueue(BENCH_QUEUE)
            for _ in range(2 * len(claims)):
                hops.get(block=True, timeout=10).ack()
            hops.close()

    per_page = {stage: round(1000 * totals[stage] / pages, 2) for stage in STAGES}
    total = sum(per_page.values())
    return {"documents": len(files), "pages": pages, "engine": engine.name, "batch_size": batch_size,
            "core_ms_per_page": per_page, "sum_core_ms_per_page": round(total, 1),
            "intake_core_ms_per_page": round(total - per_page["inference"], 1)}


def _record_intake(settings: Settings, claim: Claim, sha256: str, file_type: str, pages: list[PreparedPage],
                   rows: list[dict], preparation) -> None:
    """What intake writes for a decoded file: the document, its pages and its status, in one transaction."""
    with session_scope(settings.sqlalchemy_url) as session:
        if document_by_sha(session, sha256) is not None:
            raise RuntimeError(f"the stage database already holds {sha256[:12]}")
        document = lifecycle.receive(session, claim, sha256)
        record_pages(session, document, rows, preparation)
        lifecycle.decoded(session, document, file_type, pages[0].metadata, len(pages))


def _record_classify(settings: Settings, sha256: str, probabilities: np.ndarray, engine, model_version_id: int
                     ) -> None:
    """What classify reads and writes for a document: its pages, what is predicted, the predictions, done."""
    with session_scope(settings.sqlalchemy_url) as session:
        document = document_by_sha(session, sha256)
        done = predicted_page_ids(session, model_version_id, [p.id for p in document.pages])
        todo = [page for page in document.pages if page.id not in done]
        record_predictions(session, todo, probabilities, engine, model_version_id, 0.0)
        lifecycle.classified(session, document, document.current_path, engine.manifest.model_version, len(todo))


def bound(costs: dict, cores: int) -> float:
    """Pages/s if `cores` did nothing but the measured stages: the ceiling a pipeline is judged against."""
    return round(1000 * cores / costs["sum_core_ms_per_page"], 2)
