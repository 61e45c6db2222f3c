"""The production parts for real: Redis + PostgreSQL servers started by the suite, a separate worker process.

Also RabbitMQ, when a broker is listening on 127.0.0.1:5672 (as on the project's machines).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from model_training.synth.samples import write_samples
from tests.helpers.cli import Cli
from tests.helpers.pipeline_checks import check_sample_batch, wait_until_inbox_empty
from tests.helpers.servers import RedisServer, port_open
from worker.db.models import Document, DocumentStatus
from worker.services import Layout, WorkerSpec, start_services
from worker.settings import embedded_database_url

# the wait for outcomes (180 s) and three CLI calls of up to 300 s each: beyond the suite's 600 s
pytestmark = [pytest.mark.services, pytest.mark.timeout(1200)]


def _wait_until_final(database_url: str, expected: int, worker: subprocess.Popen, log: Path,
                      timeout: float = 180) -> None:
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert worker.poll() is None, f"worker exited early:\n{log.read_text()}"
            with Session(engine) as session:
                final = session.scalar(select(func.count()).select_from(Document)
                                       .where(Document.status.in_(DocumentStatus.FINAL)))
            if final == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"only {final} of {expected} documents final after {timeout}s:\n{log.read_text()}")
    finally:
        engine.dispose()


def _end_to_end(cli: Cli, home: Path, tmp_path: Path) -> None:
    cli("db", "upgrade")
    layout = Layout(workers={"worker": WorkerSpec(("ingest", "infer"))})
    with start_services(layout, cli.env, tmp_path, cli=cli.command(), cwd=cli.cwd) as services:
        inbox = tmp_path / "inbox"
        write_samples(inbox)
        assert "queued 5 file(s)" in cli("watch", "--inbox", str(inbox), "--once").stderr
        _wait_until_final(cli.env["ECG_INTAKE_DATABASE_URL"], 5, services["worker"], services.logs["worker"])
        wait_until_inbox_empty(inbox)  # the outcome is committed just before the file's move
        check_sample_batch(cli.results(), home, inbox)


def test_redis_and_postgres_with_a_separate_worker(cli: Cli, home: Path, tmp_path: Path,
                                                     redis_server: RedisServer, postgres_url: str) -> None:
    cli.env["ECG_INTAKE_DATABASE_URL"] = postgres_url
    cli.env["ECG_INTAKE_BROKER_URL"] = redis_server.url
    _end_to_end(cli, home, tmp_path)


@pytest.mark.skipif(not port_open(5672), reason="no RabbitMQ broker on 127.0.0.1:5672")
def test_rabbitmq_broker_with_a_separate_worker(cli: Cli, home: Path, tmp_path: Path) -> None:
    from kombu import Connection

    url = "amqp://guest:guest@127.0.0.1:5672//"
    with Connection(url) as connection:  # a clean start: no messages left by an earlier run
        channel = connection.channel()
        for queue in ("ingest", "infer"):
            try:
                channel.queue_purge(queue)
            except Exception:
                channel = connection.channel()
    cli.env["ECG_INTAKE_DATABASE_URL"] = embedded_database_url(home)
    cli.env["ECG_INTAKE_BROKER_URL"] = url
    _end_to_end(cli, home, tmp_path)
