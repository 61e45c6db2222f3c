"""`ecg-intake bench pipeline`: pages/s from inbox to database, and single-file latency, on the real processes.

Everything runs as a user runs it: `ecg-intake run` on the embedded default, or `watch` plus one ingest
and one inference worker against Redis and PostgreSQL. Once one file has gone through (the processes
are warm), the batch is moved into the inbox and timed from that moment to the last result row; pages/s
is divided by the best CPU engine figure measured in the same run (`efficiency`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from worker.bench.engine import bench_engine
from worker.bench.inputs import synth_inputs
from worker.db.models import Document, DocumentStatus, Page, Prediction
from worker.processes import stop_gracefully


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker.cli", *args]


def _start(work: Path, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A pipeline process whose output goes to `<work>/logs/<name>.log`, read back when something goes wrong."""
    (work / "logs").mkdir(exist_ok=True)
    log = open(work / "logs" / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(_cli(*args), env=env, stdout=log, stderr=subprocess.STDOUT)


def _log_tail(work: Path, lines: int = 40) -> str:
    return "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                     for path in sorted((work / "logs").glob("*.log")))


def _env(work: Path, home: Path, bundle_dir: Path, engine: dict, **extra: str) -> dict[str, str]:
    """Settings for one measured setup: its own home, the engine measured best, a shared engine cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    env.update({"ECG_INTAKE_HOME": str(home), "ECG_INTAKE_BUNDLE": str(bundle_dir),
                "ECG_INTAKE_ENGINE_CACHE": str(work / "engines"),
                "ECG_INTAKE_ENGINE": engine["engine"], "ECG_INTAKE_BATCH_SIZE": str(engine["batch_size"]),
                "PYTHONUNBUFFERED": "1", **extra})
    return env


def _count(url: str, *statuses: str) -> int:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return session.scalar(select(func.count()).select_from(Document).where(
                Document.status.in_(statuses or DocumentStatus.FINAL))) or 0
    finally:
        engine.dispose()


def _wait_for(url: str, count: int, processes: list[subprocess.Popen], work: Path, stall: float = 180) -> None:
    """Until `count` documents are final; fails with the processes' logs when one dies or nothing moves."""
    last, moved_at = -1, time.monotonic()
    while True:
        try:
            final = _count(url)
        except OperationalError:  # the schema is not there yet
            final = 0
        if final >= count:
            return
        if final != last:
            last, moved_at = final, time.monotonic()
        if time.monotonic() - moved_at > stall or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"the pipeline stopped at {final} of {count} final documents:\n{_log_tail(work)}")
        time.sleep(0.2)


def _utc_seconds(moment: datetime) -> float:
    """SQLite hands back naive datetimes; every timestamp here is written in UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _batch_through(processes: list[subprocess.Popen], inbox: Path, url: str, pages_dir: Path,
                   warm_up: Path, work: Path) -> dict:
    """Warm the running pipeline with one file, then move the whole batch in and time it to the last result."""
    files = sorted(p for p in pages_dir.iterdir() if p.name != "labels.csv")
    shutil.copy(warm_up, inbox / warm_up.name)
    _wait_for(url, 1, processes, work, stall=600)
    started = time.time()
    for path in files:  # a rename each: complete files appear at once, as a batch copied to a share would
        os.replace(path, inbox / path.name)
    _wait_for(url, len(files) + 1, processes, work)
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            last = session.scalar(select(func.max(Document.processed_at)))
            predicted = session.scalar(select(func.count()).select_from(Prediction)) - 1
    finally:
        engine.dispose()
    seconds = _utc_seconds(last) - started
    return {"documents": len(files), "pages": predicted,
            "quarantined": _count(url, DocumentStatus.QUARANTINED), "seconds": round(seconds, 2),
            "pages_per_s": round(predicted / seconds, 2)}


def _embedded(pages_dir: Path, work: Path, bundle_dir: Path, engine: dict, warm_up: Path) -> dict:
    home, inbox = work / "embedded-home", work / "embedded-inbox"
    inbox.mkdir()
    runner = _start(work, "embedded-run", ["run", "--inbox", str(inbox)], _env(work, home, bundle_dir, engine))
    try:
        result = _batch_through([runner], inbox, f"sqlite:///{home / 'ecg-intake.db'}", pages_dir, warm_up, work)
        restarts = (work / "logs" / "embedded-run.log").read_text(errors="replace").count("starting it again")
        return {**result, "inference_restarts": restarts}
    finally:
        stop_gracefully(runner)


@contextmanager
def _fresh_postgres_database(server_url: str) -> Iterator[str]:
    """An empty database on the given server for one measurement, dropped afterwards."""
    name = f"ecg_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _services(pages_dir: Path, work: Path, bundle_dir: Path, engine: dict, warm_up: Path, database_url: str,
              broker_url: str) -> dict:
    home, inbox = work / "services-home", work / "services-inbox"
    inbox.mkdir()
    with _fresh_postgres_database(database_url) as url:
        env = _env(work, home, bundle_dir, engine, ECG_INTAKE_DATABASE_URL=url, ECG_INTAKE_BROKER_URL=broker_url)
        subprocess.run(_cli("db", "upgrade"), env=env, check=True, capture_output=True)
        processes = [
            _start(work, "services-ingest", ["worker", "--queues", "ingest"], env),
            _start(work, "services-infer", ["worker", "--queues", "infer", "--pool", "threads", "--concurrency",
                                            str(engine["batch_size"])], env),
            _start(work, "services-watch", ["watch", "--inbox", str(inbox)], env)]
        try:
            return _batch_through(processes, inbox, url, pages_dir, warm_up, work)
        finally:
            for process in processes:
                stop_gracefully(process)


def _latency(samples: list[Path], work: Path, bundle_dir: Path, engine: dict, stable_seconds: float) -> dict:
    """Seconds from a file's copy into the inbox to its prediction row, on an idle `run`.

    The first file warms the worker up and is not counted.
    """
    home, inbox = work / "latency-home", work / "latency-inbox"
    inbox.mkdir()
    env = _env(work, home, bundle_dir, engine, ECG_INTAKE_STABLE_SECONDS=str(stable_seconds))
    runner = _start(work, "latency-run", ["run", "--inbox", str(inbox)], env)
    database = None
    latencies = []
    try:
        for i, sample in enumerate(samples):
            dropped_at = time.time()
            shutil.copy(sample, inbox / sample.name)  # as a scanner or a share copy writes it
            deadline = time.monotonic() + 120
            created = None
            while created is None:
                if runner.poll() is not None or time.monotonic() > deadline:
                    state = (f"`run` exited with code {runner.returncode}" if runner.poll() is not None
                             else "no prediction within 120 s")
                    raise RuntimeError(f"the embedded pipeline did not answer drop {i + 1} of {len(samples)} "
                                       f"({state}):\n{_log_tail(work)}")
                if database is None and (home / "ecg-intake.db").exists():
                    database = create_engine(f"sqlite:///{home / 'ecg-intake.db'}")
                if database is not None:
                    with Session(database) as session:
                        try:
                            created = session.scalar(select(Prediction.created_at).join(Page).join(Document).where(
                                Document.path.like(f"%{sample.name}")))
                        except OperationalError:  # the database file is there, its schema not yet
                            created = None
                time.sleep(0.05)
            if i:
                latencies.append(_utc_seconds(created) - dropped_at)
            time.sleep(0.5)
    finally:
        stop_gracefully(runner)
        if database is not None:
            database.dispose()
    values = np.array(latencies)
    return {"drops": len(latencies), "stable_seconds": stable_seconds,
            "p50_s": round(float(np.percentile(values, 50)), 2),
            "p95_s": round(float(np.percentile(values, 95)), 2), "max_s": round(float(values.max()), 2)}


def bench_pipeline(bundle_dir: Path, pages: int = 500, database_url: str | None = None,
                   broker_url: str | None = None, latency_drops: int = 20, stable_seconds: float = 2.0,
                   fmt: str = "jpg") -> dict:
    """The whole pipeline against the engine alone, measured in one run on this machine."""
    work_dir = tempfile.TemporaryDirectory()
    work = Path(work_dir.name)
    engines = bench_engine(bundle_dir, batch_sizes=(1, 8, 32), cache_dir=work / "engines")
    best = engines["best_cpu"]
    result: dict = {"benchmark": "pipeline", "pages": pages, "format": fmt, "engine": engines["rows"],
                    "best_cpu_engine": best, "cpu_count": os.cpu_count()}
    with work_dir:
        synth_inputs(work / "singles", latency_drops + 1, (fmt,), "light", seed=31_338, dpi=200)
        singles = sorted(p for p in (work / "singles").iterdir() if p.suffix == f".{fmt}")
        synth_inputs(work / "pages", pages, (fmt,), "light", seed=31_337, dpi=200)
        shutil.copytree(work / "pages", work / "pages-copy")
        embedded = _embedded(work / "pages", work, bundle_dir, best, singles[0])
        result["embedded"] = {**embedded, "efficiency": round(embedded["pages_per_s"] / best["images_per_s"], 3)}
        if database_url and broker_url:
            services = _services(work / "pages-copy", work, bundle_dir, best, singles[0], database_url, broker_url)
            result["services"] = {**services, "efficiency": round(services["pages_per_s"] / best["images_per_s"], 3)}
        if latency_drops:
            result["latency"] = _latency(singles, work, bundle_dir, best, stable_seconds)
    result["efficiency"] = result["embedded"]["efficiency"]
    return result
