"""Prometheus metrics of every ecg-intake process, counted where each event happens, served per process tree.

Multiprocess mode, always, once a service has called `configure`. A service is a tree of processes: `run` has
its inference and further ingest children, every worker has its decoder process, a Celery pool may fork. Each
process writes its samples into files of one folder (`PROMETHEUS_MULTIPROC_DIR`), and the process that serves
/metrics adds them up at scrape time, so one scrape target speaks for its whole tree.

Which folder:
- `PROMETHEUS_MULTIPROC_DIR` already set (a container's emptyDir or tmpfs, a unit's RuntimeDirectory): that
  folder; whoever set it owns it and starts each tree with it empty.
- unset: `<home>/metrics/<host>-<pid>`, made empty by the root of the tree and handed to its children through
  the environment. One folder per tree, never per machine: two services on one machine serve their own counts,
  so Prometheus never adds one event up twice; and keyed by host and pid, because the home may be a share that
  several machines (pods) mount. The folder goes when its root exits; folders of roots that died without
  cleaning up (SIGKILL) are removed by the next root that starts on the same host.

Counters and histograms of a child that died are kept on purpose: they are part of what its tree did since the
tree started, and dropping them would make a counter go backwards (read by Prometheus as a restart). Only the
live gauges of a dead pid mean nothing any more; `process_gone` drops those (prometheus_client's
`mark_process_dead`). A whole tree restarting starts again from zero: a counter reset, which `rate()` handles.

Labels carry only fixed vocabularies and configuration (an inbox's source name, an engine, a model version, a
reason code), never a file name or a patient identifier.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from ingest.reasons import Reason
    from ingest.watch import Claim
    from worker.settings import Settings

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "ecg_intake"
STAGES = ("hash", "decode", "page_files", "inference")
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FAULT_KINDS = ("database", "broker", "disk", "installation")
RETRAIN_OUTCOMES = ("promoted", "rejected", "skipped", "refused", "failed")


def configure(settings: Settings) -> Path:
    """Choose this tree's metrics folder (module docstring); call before the first metric is counted."""
    given = os.environ.get(ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        root = settings.home_dir / "metrics"
        _remove_dead_trees(root)
        folder = root / f"{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ[ENV] = str(folder)
        atexit.register(_remove_own, folder, os.getpid())
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is values.MutexValue:
        raise RuntimeError("prometheus_client was imported before the metrics folder was chosen: its counts "
                           "would stay in one process")
    return folder


def _remove_own(folder: Path, root_pid: int) -> None:
    """At the root's exit only: a forked child inherits the handler, and must not take its tree's folder away."""
    if os.getpid() == root_pid:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_dead_trees(root: Path) -> None:
    host = socket.gethostname()
    for folder in root.glob(f"{host}-*"):
        pid = folder.name.removeprefix(f"{host}-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def multiprocess() -> bool:
    return bool(os.environ.get(ENV))


def process_gone(pid: int) -> None:
    """A child of this tree exited: drop its live gauges; its counters stay in the tree's totals."""
    if multiprocess():
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid)


@dataclass(frozen=True)
class _Metrics:
    files_received: Counter
    pages_classified: Counter
    quarantined: Counter
    installation_faults: Counter
    retrain_outcomes: Counter
    stage_seconds: Histogram
    reviews_saved: Counter
    review_request_seconds: Histogram


_making = threading.Lock()


def _metrics() -> _Metrics:
    """One set per process, even when the classifier's pool threads first ask for it at the same moment (a
    second set would be refused by the registry: DuplicateTimeseries)."""
    with _making:
        return _made()


@cache
def _made() -> _Metrics:
    """Made on first use, never at import: the mode (one process or many) is fixed when a metric is made."""
    from prometheus_client import Counter, Histogram

    found = _Metrics(
        Counter(f"{PREFIX}_files_received", "files claimed from an inbox", ["source"]),
        Counter(f"{PREFIX}_pages_classified", "pages given predictions", ["engine", "model_version"]),
        Counter(f"{PREFIX}_quarantined", "documents quarantined, by reason code", ["reason"]),
        Counter(f"{PREFIX}_installation_faults", "task runs that met a fault of the installation, not of the file",
                ["kind"]),
        Counter(f"{PREFIX}_retrain_outcomes", "nightly retraining runs, by outcome", ["outcome"]),
        Histogram(f"{PREFIX}_stage_seconds", "seconds one document spends in a pipeline stage", ["stage"],
                  buckets=STAGE_BUCKETS),
        Counter(f"{PREFIX}_reviews_saved", "reviews saved in the review UI or its API"),
        # route: the path template (/api/pages/{page_id}), never the path itself; status: 2xx, 3xx, 4xx, 5xx
        Histogram(f"{PREFIX}_review_request_seconds", "seconds the review app took to answer, by route",
                  ["method", "route", "status"], buckets=REQUEST_BUCKETS),
    )
    from ingest.reasons import Reason

    for reason in Reason:  # every known series exists from the start, so rate() sees the first event
        found.quarantined.labels(reason.value)
    for kind in FAULT_KINDS:
        found.installation_faults.labels(kind)
    for outcome in RETRAIN_OUTCOMES:
        found.retrain_outcomes.labels(outcome)
    for stage in STAGES:
        found.stage_seconds.labels(stage)
    return found


def file_received(claim: Claim) -> None:
    _metrics().files_received.labels(claim.source).inc()


def pages_classified(engine: str, model_version: str, pages: int) -> None:
    _metrics().pages_classified.labels(engine, model_version).inc(pages)


def quarantined(reason: Reason) -> None:
    _metrics().quarantined.labels(reason.value).inc()


def review_saved() -> None:
    _metrics().reviews_saved.inc()


def review_request(method: str, route: str, status: int, seconds: float) -> None:
    _metrics().review_request_seconds.labels(method, route, f"{status // 100}xx").observe(seconds)


def retrain_outcome(outcome: str) -> None:
    _metrics().retrain_outcomes.labels(outcome).inc()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as one document's `name` stage (failures too: their time was spent)."""
    with _metrics().stage_seconds.labels(name).time():
        yield


def fault_kind(exc: BaseException) -> str | None:
    """database, broker, disk or installation for a fault of the machine; None for anything else."""
    from kombu.exceptions import OperationalError as BrokerUnreachable
    from sqlalchemy.exc import OperationalError

    from ingest.reasons import InstallationError

    if isinstance(exc, OperationalError):
        return "database"
    if isinstance(exc, BrokerUnreachable):
        return "broker"
    if isinstance(exc, InstallationError):
        return "disk" if isinstance(exc.__cause__, OSError) else "installation"
    return None


def installation_fault(exc: BaseException) -> None:
    kind = fault_kind(exc)
    if kind is not None:
        _metrics().installation_faults.labels(kind).inc()


def _on_retry(reason: BaseException | None = None, **_: Any) -> None:
    installation_fault(getattr(reason, "exc", reason))  # autoretry's Retry carries the task's own exception


def _on_failure(exception: BaseException | None = None, **_: Any) -> None:
    if exception is not None:  # the last try: retries spent, or a fault not retried
        installation_fault(exception)


def count_task_faults() -> None:
    """Each task run that met an installation fault counts once: every retried run, and the last one."""
    from celery.signals import task_failure, task_retry

    task_retry.connect(_on_retry, weak=False)
    task_failure.connect(_on_failure, weak=False)


class QueueDepth:
    """Messages waiting in each Celery queue, asked of the broker at scrape time."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from worker.celery_app import queue_depths

        try:
            depths = queue_depths()
        except Exception as exc:  # the broker is down: no sample rather than a wrong one; /readyz says why
            log.warning("queue depth unknown: %s: %s", type(exc).__name__, exc)
            return
        gauge = GaugeMetricFamily(f"{PREFIX}_queue_depth", "messages waiting in a Celery queue, read from the "
                                  "broker at scrape time", labels=["queue"])
        for queue, depth in depths.items():
            gauge.add_metric([queue], depth)
        yield gauge


class _ThisProcess:
    """The default registry of a process that was never configured (one process, e.g. under a test)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client import REGISTRY

        return REGISTRY.collect()


def registry(queue_depth: bool = False) -> CollectorRegistry:
    """What /metrics serves: the whole tree's metrics, the serving process's own resources, the queues."""
    from prometheus_client import CollectorRegistry, ProcessCollector
    from prometheus_client.multiprocess import MultiProcessCollector

    found = CollectorRegistry()
    _metrics()  # this process's series exist even before its first event
    if multiprocess():
        MultiProcessCollector(found)
        ProcessCollector(registry=found)
    else:
        found.register(_ThisProcess())
    if queue_depth:
        found.register(QueueDepth())
    return found
