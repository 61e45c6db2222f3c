"""`ecg-intake bench pipeline`: pages/s from inbox to database against the bound its own stages set, and
single-file latency, on the real processes.

Everything runs as a user runs it: `ecg-intake run` on the embedded default, or `watch` plus ingest and
inference workers against Redis and PostgreSQL. Once one file has gone through (the processes are warm),
the batch is moved into the inbox and timed from that moment to the last result row. In the same run each
stage's cost per page is measured alone (`worker.bench.stages`); their sum bounds what the machine's cores
can do, and `efficiency` is the pipeline's pages/s over that bound.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from worker.bench.engine import bench_engine
from worker.bench.inputs import synth_inputs
from worker.bench.runs import bench_env, fresh_postgres_database, utc_seconds
from worker.bench.stages import bound, machine_busy_seconds, stage_costs
from worker.db.models import Document, DocumentStatus, Page, Prediction
from worker.db.session import get_engine, session_scope
from worker.services import CLI, Services, embedded_layout, services_layout, start_services
from worker.settings import Settings, embedded_database_path, embedded_database_url

# The `cuda` engine's rate assumed for the GPU estimate when no GPU is here to measure it: a small ConvNeXt at a
# few hundred pixels, fp16, batch 128 on one data-centre GPU. `--gpu-images-per-s` sets another.
ASSUMED_GPU_IMAGES_PER_S = 3000.0


def _count(url: str, *statuses: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(Document).where(
            Document.status.in_(statuses or DocumentStatus.FINAL))) or 0


def _wait_for(url: str, count: int, services: Services, stall: float = 180) -> None:
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
        if time.monotonic() - moved_at > stall or not services.alive():
            raise RuntimeError(f"the pipeline stopped at {final} of {count} final documents:\n{services.tail()}")
        time.sleep(0.2)


def _batch_through(services: Services, inbox: Path, url: str, pages_dir: Path, warm_up: Path) -> dict:
    """Warm the running pipeline with one file, then move the whole batch in and time it to the last result;
    the machine's CPU use over that time is its share of all cores."""
    files = sorted(p for p in pages_dir.iterdir() if p.name != "labels.csv")
    shutil.copy(warm_up, inbox / warm_up.name)
    _wait_for(url, 1, services, stall=600)
    started, busy = time.time(), machine_busy_seconds()
    for path in files:  # a rename each: complete files appear at once, as a batch copied to a share would
        os.replace(path, inbox / path.name)
    _wait_for(url, len(files) + 1, services)
    utilisation = (machine_busy_seconds() - busy) / ((time.time() - started) * (os.cpu_count() or 1))
    with session_scope(url) as session:
        last = session.scalar(select(func.max(Document.processed_at)))
        predicted = session.scalar(select(func.count()).select_from(Prediction)) - 1
    seconds = utc_seconds(last) - started
    return {"documents": len(files), "pages": predicted,
            "quarantined": _count(url, DocumentStatus.QUARANTINED), "seconds": round(seconds, 2),
            "pages_per_s": round(predicted / seconds, 2), "cpu_utilisation": round(min(utilisation, 1.0), 3)}


def _embedded(pages_dir: Path, work: Path, bundle_dir: Path, engine: dict, warm_up: Path, ingest_workers: int
              ) -> dict:
    home, inbox = work / f"embedded-{ingest_workers}-home", work / f"embedded-{ingest_workers}-inbox"
    inbox.mkdir()
    env = bench_env(work, home, bundle_dir, engine, ECG_INTAKE_INGEST_CONCURRENCY=str(ingest_workers))
    with start_services(embedded_layout(inbox), env, work / "logs", log_prefix=f"embedded-{ingest_workers}-"
                        ) as services:
        result = _batch_through(services, inbox, embedded_database_url(home), pages_dir, warm_up)
        restarts = services.logs["run"].read_text(errors="replace").count("starting it again")
        return {**result, "ingest_workers": ingest_workers, "inference_restarts": restarts}


def _services(pages_dir: Path, work: Path, bundle_dir: Path, engine: dict, warm_up: Path, database_url: str,
              broker_url: str, ingest_workers: int) -> dict:
    home, inbox = work / f"services-{ingest_workers}-home", work / f"services-{ingest_workers}-inbox"
    inbox.mkdir()
    with fresh_postgres_database(database_url) as url:
        env = bench_env(work, home, bundle_dir, engine, ECG_INTAKE_DATABASE_URL=url, ECG_INTAKE_BROKER_URL=broker_url)
        subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
        layout = services_layout(inbox, engine["batch_size"], ingest_workers)
        with start_services(layout, env, work / "logs", log_prefix=f"services-{ingest_workers}-") as services:
            return {**_batch_through(services, inbox, url, pages_dir, warm_up), "ingest_workers": ingest_workers}


def _stage_costs(files: list[Path], work: Path, bundle_dir: Path, engine: dict, database_url: str | None = None,
                 broker_url: str | None = None) -> dict:
    """Each stage alone on the batch's files, with the setup's own database and broker (a fresh database)."""
    name = "stages-services" if database_url else "stages-embedded"
    home = work / name
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database(database_url)) if database_url else None
        env = bench_env(work, home, bundle_dir, engine, **({"ECG_INTAKE_DATABASE_URL": url} if url else {}))
        subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
        settings = Settings(home=home, bundle=bundle_dir, engine_cache=work / "engines", database_url=url,
                            broker_url=broker_url)
        costs = stage_costs(files, settings, engine["engine"], engine["batch_size"], work / f"{name}-scratch")
        get_engine(settings.sqlalchemy_url).dispose()  # before the database is dropped
        return costs


def _against_bound(runs: list[dict], costs: dict, engine_alone: float) -> dict:
    """The run with the most ingest workers, its efficiency against the stages' bound, and every run's pages/s."""
    cores = os.cpu_count() or 1
    best = max(runs, key=lambda run: run["ingest_workers"])
    ceiling = bound(costs, cores)
    return {**best, "stage_costs": costs, "bound_pages_per_s": ceiling,
            "efficiency": round(best["pages_per_s"] / ceiling, 3),
            "pages_per_s_over_engine_alone": round(best["pages_per_s"] / engine_alone, 3),
            "pages_per_s_by_ingest_workers": {str(run["ingest_workers"]): run["pages_per_s"] for run in runs}}


def gpu_estimate(costs: dict, engines: list[dict], assumed_images_per_s: float) -> dict:
    """On paper: the CPU cores intake needs to keep one GPU busy, from the measured intake cost per page."""
    measured = [row for row in engines if row["engine"] in ("cuda", "tensorrt") and "images_per_s" in row]
    rate = max((row["images_per_s"] for row in measured), default=assumed_images_per_s)
    return {"kind": "estimate", "gpu_images_per_s": rate,
            "gpu_rate_source": "measured in this run" if measured else "assumed (no GPU here)",
            "intake_core_ms_per_page": costs["intake_core_ms_per_page"],
            "intake_cores_per_gpu": round(rate * costs["intake_core_ms_per_page"] / 1000, 1)}


def _prediction_time(url: str, name: str) -> datetime | None:
    """When the file called `name` got its prediction; None before that, or before the schema exists."""
    try:
        with session_scope(url) as session:
            return session.scalar(select(Prediction.created_at).join(Page).join(Document).where(
                Document.path.like(f"%{name}")))
    except OperationalError:  # the database file is there, its schema not yet
        return None


def _latency(samples: list[Path], work: Path, bundle_dir: Path, engine: dict, stable_seconds: float) -> dict:
    """Seconds from a file's copy into the inbox to its prediction row, on an idle `run`.

    The first file warms the worker up and is not counted.
    """
    home, inbox = work / "latency-home", work / "latency-inbox"
    inbox.mkdir()
    env = bench_env(work, home, bundle_dir, engine, ECG_INTAKE_STABLE_SECONDS=str(stable_seconds))
    url = embedded_database_url(home)
    latencies = []
    with start_services(embedded_layout(inbox), env, work / "logs", log_prefix="latency-") as services:
        runner = services["run"]
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
                                       f"({state}):\n{services.tail()}")
                if embedded_database_path(home).exists():  # connecting earlier would create it before `run` does
                    created = _prediction_time(url, sample.name)
                time.sleep(0.05)
            if i:
                latencies.append(utc_seconds(created) - dropped_at)
            time.sleep(0.5)
    values = np.array(latencies)
    return {"drops": len(latencies), "stable_seconds": stable_seconds,
            "p50_s": round(float(np.percentile(values, 50)), 2),
            "p95_s": round(float(np.percentile(values, 95)), 2), "max_s": round(float(values.max()), 2)}


def bench_pipeline(bundle_dir: Path, pages: int = 500, database_url: str | None = None,
                   broker_url: str | None = None, latency_drops: int = 20, stable_seconds: float = 2.0,
                   fmt: str = "jpg", ingest_workers: tuple[int, ...] = (1, 2),
                   gpu_images_per_s: float = ASSUMED_GPU_IMAGES_PER_S, batch_size: int | None = None) -> dict:
    """The whole pipeline against the bound its own stages set, measured in one run on this machine.

    The pipeline runs the CPU engine measured fastest, at `batch_size` when given (runs to be compared then
    share it; the fastest batch size is often a matter of noise)."""
    work_dir = tempfile.TemporaryDirectory()
    work = Path(work_dir.name)
    engines = bench_engine(bundle_dir, batch_sizes=tuple(sorted({1, 8, 32, batch_size or 8})),
                           cache_dir=work / "engines")
    best = engines["best_cpu"]
    if batch_size:
        best = max((row for row in engines["rows"] if row["batch_size"] == batch_size and row["engine"] in
                    ("onnx", "cpu")), key=lambda row: row["images_per_s"])
    result: dict = {"benchmark": "pipeline", "pages": pages, "format": fmt, "engine": engines["rows"],
                    "best_cpu_engine": best, "cpu_count": os.cpu_count()}
    with work_dir:
        synth_inputs(work / "singles", latency_drops + 1, (fmt,), "light", seed=31_338, dpi=200)
        singles = sorted(p for p in (work / "singles").iterdir() if p.suffix == f".{fmt}")
        synth_inputs(work / "pages", pages, (fmt,), "light", seed=31_337, dpi=200)
        files = sorted(p for p in (work / "pages").iterdir() if p.suffix == f".{fmt}")

        def batch(name: str) -> Path:
            return Path(shutil.copytree(work / "pages", work / name))

        costs = _stage_costs(files, work, bundle_dir, best)
        runs = [_embedded(batch(f"pages-embedded-{n}"), work, bundle_dir, best, singles[0], n)
                for n in ingest_workers]
        result["embedded"] = _against_bound(runs, costs, best["images_per_s"])
        if database_url and broker_url:
            costs = _stage_costs(files, work, bundle_dir, best, database_url, broker_url)
            runs = [_services(batch(f"pages-services-{n}"), work, bundle_dir, best, singles[0], database_url,
                              broker_url, n) for n in ingest_workers]
            result["services"] = _against_bound(runs, costs, best["images_per_s"])
        if latency_drops:
            result["latency"] = _latency(singles, work, bundle_dir, best, stable_seconds)
    result["efficiency"] = result["embedded"]["efficiency"]
    result["gpu_estimate"] = gpu_estimate(result["embedded"]["stage_costs"], engines["rows"], gpu_images_per_s)
    return result
