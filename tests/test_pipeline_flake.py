"""A file dropped into a live `run` is always answered, even when a worker polls the embedded queue while a
message is still being written (the cause of `bench pipeline`'s "did not answer a single file").

kombu's file transport writes a message in three steps: create the file under its final name, lock it,
write the bytes. A reader that took the file between the first and the last step got an empty message;
Celery stopped the worker as on an unrecoverable error and the task (one file's) was gone. The test holds
a real message in each of those states in a live `run`'s queue folder.
"""

from __future__ import annotations

import fcntl
import shutil
import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from model_training.synth.samples import write_samples
from tests.helpers.cli import Cli
from worker.celery_app import INTAKE_TASK, create_celery
from worker.db.models import Document, DocumentStatus
from worker.settings import Settings, embedded_database_url


def _statuses(home: Path) -> dict[str, str]:
    """File name -> document status, read from the embedded database (empty before its schema exists)."""
    engine = create_engine(embedded_database_url(home))
    try:
        with Session(engine) as session:
            return {Path(path).name: status for path, status in session.execute(select(Document.path,
                                                                                        Document.status))}
    except OperationalError:
        return {}
    finally:
        engine.dispose()


def _wait_done(home: Path, runner: subprocess.Popen, names: set[str], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not names <= {name for name, status in _statuses(home).items() if status == DocumentStatus.DONE}:
        assert runner.poll() is None, f"`run` exited with {runner.returncode}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"not answered: {names} {_statuses(home)}\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def _intake_message(claimed: Path, original: Path, scratch: Path) -> tuple[str, bytes]:
    """The broker file the watcher would write for this claim: its name and bytes, made by the product's producer."""
    producer = create_celery(Settings(home=scratch), with_tasks=False)
    producer.send_task(INTAKE_TASK, args=[{"claimed": str(claimed), "original": str(original), "source": "default"}])
    (message,) = (scratch / "broker" / "queue").glob("*.ingest.msg")
    return message.name, message.read_bytes()


def _hold(runner: subprocess.Popen, queued: Path, state: str, log: Path, seconds: float = 1.5) -> None:
    """Keep the message in one state for many of the workers' 0.1 s polls: no reader may take it, `run` stays up."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert queued.exists(), f"a worker took the message while it was {state}:\n{log.read_text()[-4000:]}"
        assert runner.poll() is None, f"`run` exited with {runner.returncode}:\n{log.read_text()[-4000:]}"
        time.sleep(0.05)


def test_a_message_read_while_it_is_written_is_neither_lost_nor_fatal(cli: Cli, home: Path, tmp_path: Path) -> None:
    inbox, log = tmp_path / "inbox", tmp_path / "run.log"
    inbox.mkdir()
    src = write_samples(tmp_path / "src", with_bad=False)
    scan, photo, pdf = (next(p for p in src if p.suffix == suffix) for suffix in (".png", ".jpg", ".pdf"))
    runner = cli.popen("run", "--inbox", str(inbox), log=log)
    try:
        shutil.copy(scan, inbox / scan.name)  # both workers are up and consuming once this is answered
        _wait_done(home, runner, {scan.name}, log)

        # A claim whose queue message is written the way kombu writes one, slowly.
        claimed = inbox / ".claimed" / f"{time.time_ns():x}-1__{photo.name}"
        claimed.parent.mkdir(exist_ok=True)
        shutil.copy(photo, claimed)
        name, payload = _intake_message(claimed, inbox / photo.name, tmp_path / "scratch")
        queued = home / "broker" / "queue" / name
        with open(queued, "wb", buffering=0) as handle:
            _hold(runner, queued, "created under its final name, empty", log)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            _hold(runner, queued, "empty and locked by its writer", log)
            handle.write(payload)
            _hold(runner, queued, "written, its writer's lock still held", log)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        _wait_done(home, runner, {scan.name, photo.name}, log)

        shutil.copy(pdf, inbox / pdf.name)  # and the pipeline still answers the next file
        _wait_done(home, runner, {scan.name, photo.name, pdf.name}, log)
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=90)
    assert not [p for p in (inbox / ".claimed").rglob("*") if p.is_file()]
    assert "Unrecoverable error" not in log.read_text()
