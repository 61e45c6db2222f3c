"""Exactly once under a crash: 200 files on real Redis + PostgreSQL, workers killed with SIGKILL mid-batch.

The replacements must finish every document with exactly one prediction per page, quarantine nothing,
and leave nothing in the claim area.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_training.synth.paper import render_page
from model_training.synth.signals import generate_record
from tests.helpers.cli import Cli
from tests.helpers.db import document_counts
from tests.helpers.processes import kill_tree
from tests.helpers.servers import RedisServer
from worker.db.models import DocumentStatus
from worker.services import Layout, Services, split_workers, start_services

pytestmark = pytest.mark.services
FILES = 200


def _write_batch(inbox: Path) -> None:
    """200 distinct page scans: one rendered ECG, each copy marked with its own dot pattern."""
    image, _ = render_page(generate_record(7), 7, "light", dpi=100)
    inbox.mkdir(parents=True)
    for i in range(FILES):
        page = image.copy()
        for bit in range(8):  # a binary code in the bottom margin makes every sha256 different
            if i >> bit & 1:
                cv2.circle(page, (20 + 12 * bit, page.shape[0] - 15), 4, (0, 0, 0), -1)
        cv2.imwrite(str(inbox / f"scan-{i:03d}.png"), page)


def _start_workers(cli: Cli, log_dir: Path) -> Services:
    """The production split (ingest; infer in four threads), each worker logging into `log_dir`."""
    return start_services(Layout(workers=split_workers(4)), cli.env, log_dir, cli=cli.command(), cwd=cli.cwd)


@pytest.mark.timeout(1200)  # waits of up to 300 s and 600 s, beyond the suite's 600 s
def test_sigkill_mid_batch_then_restart_gives_exactly_one_prediction_per_page(
        cli: Cli, home: Path, tmp_path: Path, redis_server: RedisServer, postgres_url: str) -> None:
    cli.env.update({"ECG_INTAKE_DATABASE_URL": postgres_url, "ECG_INTAKE_BROKER_URL": redis_server.url,
                    "ECG_INTAKE_VISIBILITY_TIMEOUT": "10"})  # unacked messages come back 10 s after the crash
    cli("db", "upgrade")
    inbox = tmp_path / "inbox"
    _write_batch(inbox)
    assert f"queued {FILES} file(s)" in cli("watch", "--inbox", str(inbox), "--once").stderr

    workers = _start_workers(cli, tmp_path / "first")
    deadline = time.monotonic() + 300
    while document_counts(postgres_url).get(DocumentStatus.DONE, 0) < 40:
        assert time.monotonic() < deadline and workers.alive(), workers.tail()
        time.sleep(0.2)
    for worker in workers.processes.values():
        kill_tree(worker)
    at_kill = document_counts(postgres_url)
    assert at_kill.get(DocumentStatus.DONE, 0) < FILES, "the batch finished before the kill; nothing was tested"

    workers = _start_workers(cli, tmp_path / "second")
    try:
        deadline = time.monotonic() + 600
        while (counts := document_counts(postgres_url)).get(DocumentStatus.DONE, 0) < FILES:
            assert time.monotonic() < deadline, f"stuck at {counts}:\n{workers.tail()}"
            assert counts.get(DocumentStatus.QUARANTINED, 0) == 0, counts
            time.sleep(0.5)
        settle_by = time.monotonic() + 30  # the last moves follow their commits; a busy machine may need a while
        while len(list((home / "archive").rglob("*.png"))) < FILES and time.monotonic() < settle_by:
            time.sleep(0.5)
    finally:
        workers.stop()

    counts = document_counts(postgres_url)
    assert counts == {DocumentStatus.DONE: FILES, "pages": FILES, "predictions": FILES, "predicted_pages": FILES}
    assert len(list((home / "archive").rglob("*.png"))) == FILES
    assert [p for p in (inbox / ".claimed").rglob("*") if p.is_file()] == []
    assert not np.any([p.is_file() for p in inbox.glob("*.png")])
