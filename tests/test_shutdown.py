"""SIGTERM mid-batch is a graceful stop: the processes exit in bounded time, leave no process behind, and every
file is either done (archived, in the database) or still claimed or queued, and finished by the next start,
with nothing quarantined and exactly one prediction per page.

`run` gets SIGTERM as `kill` or a container runtime sends it, to its own pid; the workers get it as systemd
sends it by default (KillMode=control-group), to every process of the service at once, decoder children too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
from sqlalchemy.exc import OperationalError

from model_training.synth.paper import render_page
from model_training.synth.signals import generate_record
from tests.helpers.cli import Cli
from tests.helpers.db import document_counts
from tests.helpers.servers import RedisServer
from worker.db.models import DocumentStatus
from worker.services import Layout, embedded_layout, split_workers, start_services
from worker.settings import embedded_database_url

FILES = 48  # enough that an idle machine is still mid-batch when the signal comes
STOP_WITHIN_S = 60  # warm shutdown finishes the file in hand: seconds, not minutes, even on a loaded machine


def _write_batch(inbox: Path, count: int = FILES) -> None:
    """`count` distinct page scans: one rendered ECG, each copy marked with its own dot pattern."""
    image, _ = render_page(generate_record(11), 11, "light", dpi=100)
    inbox.mkdir(parents=True)
    for i in range(count):
        page = image.copy()
        for bit in range(8):
            if i >> bit & 1:
                cv2.circle(page, (20 + 12 * bit, page.shape[0] - 15), 4, (0, 0, 0), -1)
        cv2.imwrite(str(inbox / f"scan-{i:03d}.png"), page)


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children), from /proc."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children")
            if children.exists():
                kids = {int(k) for k in children.read_text().split()}
                todo.extend(kids - found)
                found |= kids
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to read its exit status."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _done(url: str) -> int:
    try:
        return document_counts(url).get(DocumentStatus.DONE, 0)
    except OperationalError:  # the embedded database's schema is not there yet
        return 0


def _wait_until_some_done(url: str, processes: list[subprocess.Popen], log: Path, at_least: int = 3) -> None:
    deadline = time.monotonic() + 300
    while _done(url) < at_least:
        assert all(p.poll() is None for p in processes), log.read_text()[-4000:]
        assert time.monotonic() < deadline, f"nothing finished in time:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def _stop_and_check(processes: list[subprocess.Popen], send: Callable[[], None], logs: list[Path]) -> float:
    """Send SIGTERM (through `send`), wait for a bounded exit; no process of theirs may outlive them."""
    tree = {pid for p in processes for pid in _descendants(p.pid)}
    sent = time.monotonic()
    send()
    for process, log in zip(processes, logs, strict=True):
        try:
            process.wait(timeout=max(1.0, STOP_WITHIN_S - (time.monotonic() - sent)))
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"pid {process.pid} still running {STOP_WITHIN_S}s after SIGTERM:\n{log.read_text()[-4000:]}")
        assert process.returncode == 0, f"exit code {process.returncode}:\n{log.read_text()[-4000:]}"
    took = time.monotonic() - sent
    deadline = time.monotonic() + 10  # a daemon decoder child may take a poll interval to go
    while (left := [pid for pid in tree if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind after SIGTERM: {left}"
    return took


def _account_for_every_file(url: str, home: Path, inbox: Path) -> dict:
    """After the stop: nothing quarantined, and each file archived (and done) or still in the inbox or claimed."""
    counts = document_counts(url)
    assert counts.get(DocumentStatus.QUARANTINED, 0) == 0, counts
    assert not [p for p in (home / "quarantine").rglob("*") if p.is_file()]
    archived = len(list((home / "archive").rglob("*.png")))
    waiting = len([p for p in inbox.rglob("*.png") if p.is_file()])  # the inbox itself and its .claimed/
    assert archived + waiting == FILES, (archived, waiting, counts)
    assert counts.get(DocumentStatus.DONE, 0) <= archived  # an outcome is recorded before its file moves
    assert counts["predictions"] == counts["predicted_pages"], counts  # no page predicted twice
    return counts


def _finished_once_each(url: str, home: Path, inbox: Path) -> None:
    counts = document_counts(url)
    assert counts == {DocumentStatus.DONE: FILES, "pages": FILES, "predictions": FILES, "predicted_pages": FILES}
    assert len(list((home / "archive").rglob("*.png"))) == FILES
    assert not [p for p in inbox.rglob("*") if p.is_file()]


@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
@pytest.mark.timeout(1200)  # 300 s to get mid-batch, 60 s to stop, 400 s for the next start
def test_sigterm_to_run_mid_batch_stops_it_cleanly_and_the_next_start_finishes(
        cli: Cli, home: Path, tmp_path: Path) -> None:
    inbox, log = tmp_path / "inbox", tmp_path / "run.log"
    _write_batch(inbox)
    url = embedded_database_url(home)
    runner = start_services(embedded_layout(inbox), cli.env, log.parent, cli=cli.command(), cwd=cli.cwd)["run"]
    try:
        _wait_until_some_done(url, [runner], log)
        assert _descendants(runner.pid), "`run` has no inference child"
        took = _stop_and_check([runner], lambda: runner.send_signal(signal.SIGTERM), [log])
    finally:
        if runner.poll() is None:
            runner.kill()
    at_stop = _account_for_every_file(url, home, inbox)
    assert at_stop.get(DocumentStatus.DONE, 0) < FILES, "the batch finished before SIGTERM; nothing was tested"
    said = log.read_text()
    assert "starting it again" not in said and "Unrecoverable" not in said, said[-4000:]
    assert "Traceback" not in said, said[-4000:]  # the embedded beat's exit included
    print(f"run: SIGTERM at {at_stop.get(DocumentStatus.DONE, 0)}/{FILES} done, exited after {took:.1f}s")

    cli("run", "--inbox", str(inbox), "--once", timeout=400)
    _finished_once_each(url, home, inbox)


@pytest.mark.services
@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
@pytest.mark.timeout(1200)  # 300 s to get mid-batch, the stop, then the restart's own 300 s
def test_sigterm_to_the_workers_process_groups_mid_batch_loses_nothing(
        cli: Cli, home: Path, tmp_path: Path, redis_server: RedisServer, postgres_url: str) -> None:
    cli.env.update({"ECG_INTAKE_DATABASE_URL": postgres_url, "ECG_INTAKE_BROKER_URL": redis_server.url,
                    "ECG_INTAKE_VISIBILITY_TIMEOUT": "10"})
    cli("db", "upgrade")
    inbox = tmp_path / "inbox"
    _write_batch(inbox)
    assert f"queued {FILES} file(s)" in cli("watch", "--inbox", str(inbox), "--once").stderr

    def start(generation: int) -> tuple[list[subprocess.Popen], list[Path]]:
        """Each worker leads its own process group, as a systemd service does."""
        workers = start_services(Layout(workers=split_workers(4)), cli.env, tmp_path / f"generation-{generation}",
                                 cli=cli.command(), cwd=cli.cwd, new_session=True)
        return list(workers.processes.values()), list(workers.logs.values())

    def sigterm_groups(processes: list[subprocess.Popen]) -> None:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)

    workers, logs = start(1)
    try:
        _wait_until_some_done(postgres_url, workers, logs[0])
        took = _stop_and_check(workers, lambda: sigterm_groups(workers), logs)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    at_stop = _account_for_every_file(postgres_url, home, inbox)
    assert at_stop.get(DocumentStatus.DONE, 0) < FILES, "the batch finished before SIGTERM; nothing was tested"
    print(f"workers: SIGTERM at {at_stop.get(DocumentStatus.DONE, 0)}/{FILES} done, exited after {took:.1f}s")

    workers, logs = start(2)
    try:
        deadline = time.monotonic() + 300
        while (done := _done(postgres_url)) < FILES or len(list((home / "archive").rglob("*.png"))) < FILES:
            assert time.monotonic() < deadline, f"stuck at {done}:\n" + logs[0].read_text()[-3000:]
            assert document_counts(postgres_url).get(DocumentStatus.QUARANTINED, 0) == 0
            time.sleep(0.3)
        _stop_and_check(workers, lambda: sigterm_groups(workers), logs)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    _finished_once_each(postgres_url, home, inbox)
