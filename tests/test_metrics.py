"""/metrics, /healthz and /readyz of real processes: a worker and a watcher over a Redis of this test's own, the
embedded `run` whose classifier is a child process, and the review app without a session."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import cv2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.helpers.cli import Cli
from tests.helpers.inputs import reference_page, scan_pdf
from tests.helpers.review import IDENTIFIER, Http, ReviewSite
from tests.helpers.servers import RedisServer, free_port
from worker.celery_app import RETRAIN_TASK, create_celery
from worker.db.models import ModelVersion, Prediction
from worker.processes import stop_gracefully
from worker.settings import Settings, embedded_database_url

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

SOURCE = "ward7"
PATIENT = "Doe_John"  # in the dropped files' names: never in a label


def _get(url: str) -> tuple[int, str]:
    try:
        with urlopen(url, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except HTTPError as error:
        return error.code, error.read().decode()


def _samples(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics answer by (name, labels), parsed by prometheus_client."""
    status, text = _get(url + "/metrics")
    assert status == 200, text
    assert PATIENT not in text and IDENTIFIER not in text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _total(samples: dict, name: str) -> float:
    return sum(value for (found, _), value in samples.items() if found == name)


def _wait(condition, what: str, processes: dict[str, subprocess.Popen], logs: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited:\n{(logs / f'{name}.log').read_text()}"
        try:
            if condition():
                return
        except (URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout:.0f}s:\n" +
                         "\n".join((logs / f"{name}.log").read_text()[-3000:] for name in processes))


def _stored_engine_and_model(home: Path) -> dict[str, str]:
    """The engine and model version the predictions in the database were made with."""
    engine = create_engine(embedded_database_url(home))
    try:
        with Session(engine) as session:
            (made_by,) = session.execute(select(Prediction.engine, ModelVersion.name).join(ModelVersion).distinct())
    finally:
        engine.dispose()
    return {"engine": made_by.engine, "model_version": made_by.name}


def _drop_files(inbox: Path) -> None:
    """A one-page scan, a two-page PDF and random bytes (quarantined as unsupported_type): three files, three
    pages, named as hospitals name them."""
    staging = inbox.parent / "staging"
    staging.mkdir()
    cv2.imwrite(str(staging / f"{PATIENT}_1.png"), reference_page(1400))
    scan_pdf(staging / f"{PATIENT}_2.pdf", pages=2)
    (staging / f"{PATIENT}_3.pdf").write_bytes(bytes(range(256)) * 16)
    for path in staging.iterdir():
        path.rename(inbox / path.name)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis this test may stop: the suite's own is shared."""
    server = RedisServer()
    yield server
    server.stop()


def _start(cli: Cli, port: int, log: Path, *args: str) -> subprocess.Popen:
    return Cli({**cli.env, "ECG_INTAKE_METRICS_PORT": str(port)}, cli.cwd).popen(*args, log=log)


def test_worker_and_watcher_count_their_own_events(cli: Cli, home: Path, tmp_path: Path,
                                                    own_redis: RedisServer) -> None:
    """The watcher queues three files before any worker runs (the queue's depth says so), then a worker takes them
    and a retraining request, and each process's /metrics counts what happened in it."""
    cli.env["ECG_INTAKE_BROKER_URL"] = own_redis.url
    cli.env["ECG_INTAKE_DIGITISE"] = "true"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ports = {"watch": free_port(), "worker": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["watch"] = _start(cli, ports["watch"], tmp_path / "watch.log", "watch", "--inbox",
                                    f"{SOURCE}={inbox}")
        _wait(lambda: _get(urls["watch"] + "/healthz") == (200, "ok\n"), "watcher up", processes, tmp_path)
        _drop_files(inbox)

        def queued() -> bool:
            found = _samples(urls["watch"])
            return (_value(found, "ecg_intake_files_received_total", source=SOURCE) == 3
                    and _value(found, "ecg_intake_queue_depth", queue="ingest") == 3)

        _wait(queued, "three files received and waiting on the ingest queue", processes, tmp_path)
        processes["worker"] = _start(cli, ports["worker"], tmp_path / "worker.log", "worker", "--queues",
                                     "ingest,infer,train")
        create_celery(Settings(broker_url=own_redis.url), with_tasks=False).send_task(
            RETRAIN_TASK, args=["test"], queue="train")  # skipped at once: nothing was reviewed

        def done() -> bool:
            found = _samples(urls["worker"])
            return (_total(found, "ecg_intake_pages_classified_total") == 3
                    and _value(found, "ecg_intake_quarantined_total", reason="unsupported_type") == 1
                    and _value(found, "ecg_intake_retrain_outcomes_total", outcome="skipped") == 1
                    and _value(found, "ecg_intake_stage_seconds_count", stage="digitise") == 2)

        _wait(done, "three pages classified and digitised, one file quarantined, one retraining skipped",
              processes, tmp_path)
        worker, watcher = _samples(urls["worker"]), _samples(urls["watch"])

        assert _value(watcher, "ecg_intake_files_received_total", source=SOURCE) == 3
        assert _total(watcher, "ecg_intake_pages_classified_total") == 0  # each process tree serves its own
        assert _total(worker, "ecg_intake_files_received_total") == 0
        classified = {labels: value for (name, labels), value in worker.items()
                      if name == "ecg_intake_pages_classified_total"}
        assert classified == {frozenset(_stored_engine_and_model(home).items()): 3}
        assert _total(worker, "ecg_intake_quarantined_total") == 1
        assert _total(worker, "ecg_intake_retrain_outcomes_total") == 1
        counts = {stage: _value(worker, "ecg_intake_stage_seconds_count", stage=stage)
                  for stage in ("hash", "decode", "page_files", "inference", "digitise")}
        assert counts == {"hash": 3, "decode": 3, "page_files": 2, "inference": 2, "digitise": 2}
        assert _value(worker, "ecg_intake_stage_seconds_bucket", stage="decode", le="+Inf") == 3
        assert _total(worker, "ecg_intake_installation_faults_total") == 0
        for samples in (worker, watcher):
            depths = {dict(labels)["queue"]: value for (name, labels), value in samples.items()
                      if name == "ecg_intake_queue_depth"}
            assert depths == {"ingest": 0, "infer": 0, "train": 0}

        pages = home / "pages"  # a full or broken data disk: the pages cannot be written, the file stays claimed
        pages.rename(home / "pages-away")
        pages.write_bytes(b"")
        cv2.imwrite(str(inbox / f"{PATIENT}_5.png"), reference_page(1200))  # other bytes: not a duplicate
        _wait(lambda: _value(_samples(urls["worker"]), "ecg_intake_installation_faults_total", kind="disk") >= 1,
              "a disk fault counted", processes, tmp_path, timeout=30)
        pages.unlink()
        (home / "pages-away").rename(pages)
        _wait(lambda: _total(_samples(urls["worker"]), "ecg_intake_pages_classified_total") == 4,
              "the file classified once the disk is back", processes, tmp_path)
        worker = _samples(urls["worker"])
        assert {kind: _value(worker, "ecg_intake_installation_faults_total", kind=kind)
                for kind in ("database", "broker", "installation")} == {"database": 0, "broker": 0, "installation": 0}
        assert _total(worker, "ecg_intake_quarantined_total") == 1  # the machine's fault never quarantines

        for url in urls.values():
            assert _get(url + "/healthz") == (200, "ok\n")
            status, body = _get(url + "/readyz")
            assert status == 200 and json.loads(body)["ready"] is True, body
            assert _get(url + "/nothing")[0] == 404

        own_redis.halt()  # the broker both need is gone: not ready, once the cached answer has aged
        for url in urls.values():
            _wait(lambda url=url: _get(url + "/readyz")[0] == 503, "readyz 503", processes, tmp_path, timeout=30)
            body = json.loads(_get(url + "/readyz")[1])
            assert body["ready"] is False and [check["name"] for check in body["failing"]] == ["broker"], body
            assert _get(url + "/healthz") == (200, "ok\n")  # alive all the same: restarting it would not help
    finally:
        for process in processes.values():
            stop_gracefully(process, timeout=20)


def test_run_serves_the_counts_of_its_child_processes(cli: Cli, home: Path, tmp_path: Path) -> None:
    """`run` classifies in a child process: its one /metrics adds the child's samples to its own (multiprocess
    mode), and the folder they were kept in is gone once it stops."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes = {"run": _start(cli, port, tmp_path / "run.log", "run", "--inbox", f"{SOURCE}={inbox}")}
    try:
        _wait(lambda: _get(url + "/healthz")[0] == 200, "run up", processes, tmp_path)
        cv2.imwrite(str(inbox / f"{PATIENT}_4.png"), reference_page(1400))
        _wait(lambda: _total(_samples(url), "ecg_intake_pages_classified_total") == 1, "one page classified",
              processes, tmp_path)
        found = _samples(url)
        assert _value(found, "ecg_intake_files_received_total", source=SOURCE) == 1  # the watcher, in `run`
        assert _value(found, "ecg_intake_stage_seconds_count", stage="hash") == 1  # its ingest worker, in `run`
        assert _value(found, "ecg_intake_stage_seconds_count", stage="inference") == 1  # the child
        assert {dict(labels)["queue"] for name, labels in found if name == "ecg_intake_queue_depth"} == \
            {"ingest", "infer", "train"}  # the embedded file queue
        status, body = _get(url + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True, body
    finally:
        stop_gracefully(processes["run"], timeout=30)
    assert processes["run"].returncode == 0, (tmp_path / "run.log").read_text()
    assert not any((home / "metrics").iterdir())


def test_receive_serves_its_probes(cli: Cli, tmp_path: Path) -> None:
    """The receiver's /readyz is its doctor checks: its inbox, and its own port answering C-ECHO."""
    port, dicom_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    processes = {"receive": _start(cli, port, tmp_path / "receive.log", "receive", "--port", str(dicom_port),
                                   "--inbox", str(tmp_path / "inbox"))}
    try:
        _wait(lambda: _get(url + "/healthz") == (200, "ok\n"), "receive up", processes, tmp_path)
        status, body = _get(url + "/readyz")
        assert status == 200 and json.loads(body)["checks"]["receive port"] == "ok", body
        found = _samples(url)
        assert _value(found, "ecg_intake_quarantined_total", reason="corrupt") == 0
        assert not [name for name, _ in found if name == "ecg_intake_queue_depth"]  # it needs no broker
    finally:
        stop_gracefully(processes["receive"], timeout=30)


def test_review_probes_answer_without_a_session_and_its_metrics_count_reviews(review_site: ReviewSite) -> None:
    anonymous = Http(review_site.url)
    before = _samples(review_site.url)
    reviewer = Http(review_site.url)
    assert reviewer.login("rita").status == 303
    page_id = review_site.pages["calm"]
    saved = reviewer.post(f"/api/pages/{page_id}/review", body={"labels": ["AF"]},
                          headers={"X-CSRF-Token": reviewer.csrf()})
    assert saved.status == 201
    after = _samples(review_site.url)
    assert _value(after, "ecg_intake_reviews_saved_total") == _value(before, "ecg_intake_reviews_saved_total") + 1
    route = {"method": "POST", "route": "/api/pages/{page_id}/review", "status": "2xx"}
    assert _value(after, "ecg_intake_review_request_seconds_count", **route) == 1
    assert _value(after, "ecg_intake_review_request_seconds_count", method="GET", route="/login", status="2xx") >= 1
    routes = {dict(labels).get("route") for (name, labels) in after if name.startswith("ecg_intake_review_request")}
    assert f"/api/pages/{page_id}/review" not in routes  # the template, never a page's own path
    alive = anonymous.get("/healthz")
    assert alive.status == 200 and alive.text == "ok\n"
    ready = anonymous.get("/readyz")
    assert ready.status == 200 and ready.json() == {"ready": True, "checks": {"database": "ok"}}
    scraped = anonymous.get("/metrics")
    assert scraped.status == 200 and scraped.headers["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(scraped.text)}
    assert {"ecg_intake_quarantined", "ecg_intake_stage_seconds", "process_resident_memory_bytes"} <= names
    assert IDENTIFIER not in scraped.text and "Doe_John" not in scraped.text
    for answer in (alive, ready, scraped):
        assert "set-cookie" not in {key.lower() for key in answer.headers}
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
