"""Flower, Celery's monitor, run as docs/deployment.md says against the broker a real worker uses: it starts and
lists that worker, with the queue it consumes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers.cli import Cli
from tests.helpers.servers import RedisServer, free_port, port_open
from worker.processes import stop_gracefully

BIN = Path(sys.executable).parent


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_flower_lists_the_workers_on_our_broker(cli: Cli, redis_server: RedisServer, tmp_path: Path) -> None:
    broker = redis_server.url.rsplit("/", 1)[0] + "/9"  # a database of its own: only this test's worker is on it
    cli.env = {**cli.env, "ECG_INTAKE_BROKER_URL": broker}
    worker = cli.popen("worker", "--queues", "ingest", log=tmp_path / "worker.log")
    port = free_port()
    flower_log = open(tmp_path / "flower.log", "w")  # noqa: SIM115 - closed below
    # The API answers without a login only when told to (Flower 2); the dashboard needs no such switch.
    flower = subprocess.Popen(
        [str(BIN / "celery"), "--broker", broker, "flower", f"--port={port}", "--address=127.0.0.1"],
        env={**cli.env, "FLOWER_UNAUTHENTICATED_API": "true"}, stdout=flower_log, stderr=flower_log, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        listed: dict = {}
        while time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert flower.poll() is None, (tmp_path / "flower.log").read_text()
            if port_open(port):
                listed = json.loads(_get(f"http://127.0.0.1:{port}/api/workers?refresh=1"))
                if any(name.startswith(f"ecg-intake-{worker.pid}@") and "active_queues" in info
                       for name, info in listed.items()):
                    break
            time.sleep(1)
        (name,) = [name for name in listed if name.startswith(f"ecg-intake-{worker.pid}@")]
        assert [queue["name"] for queue in listed[name]["active_queues"]] == ["ingest"]
        assert name in _get(f"http://127.0.0.1:{port}/workers")  # the page an operator opens
    finally:
        stop_gracefully(flower, timeout=10)
        stop_gracefully(worker, timeout=30)
        flower_log.close()
