"""The embedded default behind `ecg-intake run`: the watcher and the ingest worker in this process, the
classifier in a supervised child, no servers.

Serving, it runs until SIGTERM or SIGINT and hands the signal to the child at once. `--once`, it claims
what is in the inboxes, waits until every claim has an outcome, and reports what has none, so a script
can tell a bad file (quarantined) from a fault of the installation (the file stays claimed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from worker.processes import Supervised, all_at_once
from worker.services import WorkerSpec, celery_worker, embedded_inference
from worker.settings import Settings

if TYPE_CHECKING:
    from ingest.watch import Claim, Watcher

SETTLE_AFTER_FAILURE_S = 10  # after a task failed for good, how long no file may settle before giving up
WAVEFORMS_WAIT_S = 120  # `--once` stops waiting for waveforms when no document's were stored for this long


@dataclass
class OnceOutcome:
    """What `run --once` did: files claimed, files still claimed, tasks that failed for good (their files
    quarantined as internal_error) and installation faults (their files wait for the next start)."""

    claimed: int
    left: int = 0
    failures: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


class StartupStop:
    """SIGTERM and SIGINT noted, not fatal, from the start of `run` until Celery's own handlers are in.

    Python's default for SIGTERM ends the process on the spot: a service manager stopping `run` while it
    imports, upgrades the database or starts its classifier child got exit 143, no word, and possibly a child
    left behind. Noted here, the signal stops start-up at the next step; one that comes after the worker
    started but before it could hear it is sent again once it is ready, so Celery shuts down warmly.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        for signum in self.SIGNALS:
            signal.signal(signum, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def hand_to_celery(self) -> None:
        """Once the worker is ready (its handlers installed), deliver a signal that came in between."""
        from celery.signals import worker_ready

        def resend(**_: object) -> None:
            if self.signum is not None:
                os.kill(os.getpid(), self.signum)

        worker_ready.connect(resend, weak=False)


def _child(settings: Settings, log_level: str, spec: WorkerSpec, name: str, *extra: str) -> Supervised:
    """A worker child of `run`, restarted if it dies. Its stdout carries only Celery's shutdown notices, which
    this process already gives for all; its logs and errors go to stderr."""
    command = [sys.executable, "-m", "worker.cli", *spec.args(), "--under-run", *extra]
    env = {**os.environ, "ECG_INTAKE_HOME": str(settings.home_dir), "ECG_INTAKE_LOG_LEVEL": log_level}
    return Supervised(command, env, name, stdout=subprocess.DEVNULL)


def inference_process(settings: Settings, log_level: str, nightly: bool) -> Supervised:
    """The classifier child: classify tasks in threads that share micro-batches."""
    return _child(settings, log_level, embedded_inference(settings.batch_size, nightly), "inference")


def ingest_processes(settings: Settings, log_level: str, reports: Path | None = None) -> list[Supervised]:
    """The ingest workers beside `run`'s own, one per further `ingest_concurrency`: each a solo worker with its
    own decoder process, so their Python work (hashing, the database, page files) runs side by side too, not
    under one interpreter lock. `reports`: where each tells `--once` about failures and installation faults
    (`Settling`)."""
    return [_child(settings, log_level, WorkerSpec(("ingest",)), f"ingest-{n}",
                   *(("--report-to", str(reports / f"ingest-{n}.jsonl")) if reports else ()))
            for n in range(2, settings.ingest_workers + 1)]


def _stop_all(children: list[Supervised]) -> None:
    all_at_once([child.stop for child in children])


def serve(settings: Settings, watcher: Watcher, log_level: str, startup: StartupStop | None = None) -> int:
    """Watch, decode and classify until a signal; the worker's exit code (non-zero: it stopped on an error).

    A signal during start-up (`startup.requested`) ends it before the next step, with 0: nothing claimed yet.
    """
    from celery.signals import worker_shutting_down

    from worker.tasks import decoder_for_worker

    startup = startup or StartupStop()
    if startup.requested:
        return 0
    children = [inference_process(settings, log_level, nightly=True), *ingest_processes(settings, log_level)]
    worker = celery_worker(WorkerSpec(("ingest",), beat=True), log_level)
    if startup.requested:  # the children are up but nothing is claimed: stop them and go
        _stop_all(children)
        return 0
    # SIGTERM/SIGINT reach this process: the children start their warm shutdown now, and are not restarted.
    worker_shutting_down.connect(lambda **_: [child.stopping() for child in children], weak=False)
    startup.hand_to_celery()
    decoder_for_worker().start()
    stop = threading.Event()
    threading.Thread(target=watcher.run, args=(stop,), name="watcher", daemon=True).start()
    try:
        worker.start()
    finally:
        stop.set()
        _stop_all(children)
    return worker.exitcode or 0


class Settling:
    """What the task signals report while `--once` waits: failures for good, and installation faults with the
    claims they hold back. `run`'s own worker reports in this process; its further ingest workers report
    through files (`report_to` there, `read_reports` here), one JSON object per line."""

    def __init__(self, report_to: Path | None = None) -> None:
        self.failures: list[str] = []
        self.faults: list[str] = []
        self.stuck: set[Path] = set()
        self.report_to = report_to
        self._read: dict[Path, int] = {}

    def connect(self) -> None:
        from celery.signals import task_failure, task_retry

        task_failure.connect(self.on_failure, weak=False)
        task_retry.connect(self.on_retry, weak=False)

    def on_failure(self, sender: object = None, exception: BaseException | None = None, **_: object) -> None:
        self._note({"failure": f"{sender.name}: {exception}"})

    def on_retry(self, request: object = None, reason: BaseException | None = None, **_: object) -> None:
        from ingest.reasons import InstallationError
        from ingest.watch import Claim

        cause = getattr(reason, "exc", reason)  # autoretry's Retry carries the task's own exception
        if isinstance(cause, InstallationError):
            report: dict[str, str] = {"fault": str(cause)}
            with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
                report["claimed"] = str(Claim.from_message(request.args[0]).claimed)
            self._note(report)

    def _note(self, report: dict[str, str]) -> None:
        if self.report_to is None:
            self._take(report)
            return
        with open(self.report_to, "a", encoding="utf-8") as handle:  # one short append: a whole line
            handle.write(json.dumps(report) + "\n")

    def _take(self, report: dict[str, str]) -> None:
        if "failure" in report:
            self.failures.append(report["failure"])
        if "fault" in report:
            self.faults.append(report["fault"])
            if "claimed" in report:
                self.stuck.add(Path(report["claimed"]))

    def read_reports(self, folder: Path) -> None:
        """Take in what the ingest children have reported since the last look."""
        for path in sorted(folder.glob("*.jsonl")):
            with open(path, encoding="utf-8") as handle:
                handle.seek(self._read.get(path, 0))
                lines = handle.read()
            whole = lines[:lines.rfind("\n") + 1]
            self._read[path] = self._read.get(path, 0) + len(whole.encode())
            for line in whole.splitlines():
                self._take(json.loads(line))


def _wait_until_settled(claims: list[Claim], settling: Settling, watcher: Watcher, reports: Path,
                        stop: Callable[[], None]) -> None:
    """Every claim settled; after a fault, every claim but the stuck ones; after a task failed for good, until no
    file has settled for `SETTLE_AFTER_FAILURE_S`. A claim left without an outcome (its message lost with a
    crashed classifier) is offered again. Then `stop`."""
    failed_at, swept, left = None, time.monotonic(), len(claims)
    while True:
        settling.read_reports(reports)
        now_left = sum(c.claimed.exists() and c.claimed not in settling.stuck for c in claims)
        if not now_left:
            break
        if now_left < left:
            left, failed_at = now_left, None
        if settling.failures and failed_at is None:
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > SETTLE_AFTER_FAILURE_S:
            break
        if time.monotonic() - swept > 1:
            watcher.reoffer_stale()
            swept = time.monotonic()
        time.sleep(0.2)
    stop()


def run_once(settings: Settings, watcher: Watcher, log_level: str,
             on_claimed: Callable[[int], None] = lambda _: None, startup: StartupStop | None = None) -> OnceOutcome:
    """Claim what the inboxes hold now (`on_claimed` hears how many), process it, and return once each claim has
    settled or cannot. A signal before the files are claimed returns at once with none claimed."""
    startup = startup or StartupStop()
    if startup.requested:
        return OnceOutcome(claimed=0)
    reports = Path(tempfile.mkdtemp(prefix="ecg-intake-once-"))
    try:
        return _run_once(settings, watcher, log_level, on_claimed, startup, reports)
    finally:
        shutil.rmtree(reports, ignore_errors=True)


def _run_once(settings: Settings, watcher: Watcher, log_level: str, on_claimed: Callable[[int], None],
              startup: StartupStop, reports: Path) -> OnceOutcome:
    from worker.tasks import decoder_for_worker

    # the children warm up while the files are claimed
    children = [inference_process(settings, log_level, nightly=False),
                *ingest_processes(settings, log_level, reports)]
    worker = celery_worker(WorkerSpec(("ingest",)), log_level)
    if startup.requested:
        _stop_all(children)
        return OnceOutcome(claimed=0)
    startup.hand_to_celery()
    decoder_for_worker().start()
    started = time.time()
    claims = watcher.run_once()
    on_claimed(len(claims))
    if not claims:
        _stop_all(children)
        return OnceOutcome(claimed=0)
    settling = Settling()
    settling.connect()

    def stop() -> None:
        _wait_for_waveforms(settings, datetime.fromtimestamp(started, UTC))
        worker.stop(in_sighandler=False)

    threading.Thread(target=_wait_until_settled, name="once-waiter", daemon=True,
                     args=(claims, settling, watcher, reports, stop)).start()
    try:
        worker.start()
    finally:
        _stop_all(children)
    settling.read_reports(reports)
    return OnceOutcome(claimed=len(claims), left=sum(c.claimed.exists() for c in claims),
                       failures=_internal_errors_since(settings, started) or settling.failures,
                       faults=settling.faults)


def _wait_for_waveforms(settings: Settings, since: datetime) -> None:
    """The documents archived since `since` have their waveforms stored too: the digitise task runs after
    classification. One left waiting is done by the next `run`, its message kept in the queue."""
    from worker.db.queries import unread_pages_since
    from worker.db.session import session_scope

    if not settings.digitise:
        return
    left, changed = None, time.monotonic()
    while time.monotonic() - changed < WAVEFORMS_WAIT_S:
        with session_scope(settings.sqlalchemy_url) as session:
            now_left = unread_pages_since(session, since)
        if not now_left:
            return
        if now_left != left:
            left, changed = now_left, time.monotonic()
        time.sleep(0.2)


def _internal_errors_since(settings: Settings, started: float) -> list[str]:
    """Classify failures happen in the inference process; the database is where this process sees them."""
    from worker.db.queries import internal_errors_since
    from worker.db.session import session_scope

    with session_scope(settings.sqlalchemy_url) as session:
        rows = internal_errors_since(session, datetime.fromtimestamp(started, UTC))
    return [f"{sha[:12]}: internal_error" for sha in rows]
