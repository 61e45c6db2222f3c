"""`bench pipeline`'s stage costs and its bound: each stage does the pipeline's real work on real files, and the
figures the bench reports are computed from what it measured."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from queue import Empty

import cv2
import pytest
from sqlalchemy import func, select

from tests.helpers.cli import Cli
from tests.helpers.servers import RedisServer
from worker.bench.inputs import synth_inputs
from worker.bench.stages import BENCH_QUEUE, STAGES, stage_costs
from worker.celery_app import create_celery
from worker.db.models import Document, DocumentStatus, Page, Prediction
from worker.db.session import session_scope
from worker.serving import champion
from worker.settings import Settings


def _files(folder: Path) -> list[Path]:
    synth_inputs(folder, 3, ("jpg", "pdf"), "light", seed=77, dpi=200)
    return sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".pdf"))


def _check_stage_costs(costs: dict, settings: Settings, files: list[Path], digests: dict[Path, str]) -> None:
    per_page = costs["core_ms_per_page"]
    assert set(per_page) == set(STAGES)
    assert all(per_page[stage] > 0 for stage in ("decode", "clean", "page_files", "database", "inference")), per_page
    assert costs["sum_core_ms_per_page"] == pytest.approx(sum(per_page.values()), abs=0.1)
    assert costs["intake_core_ms_per_page"] == pytest.approx(costs["sum_core_ms_per_page"] - per_page["inference"],
                                                             abs=0.1)
    assert costs["documents"] == len(files) and costs["pages"] >= len(files)
    for path in files:  # the batch is copied for the stages, never moved or changed
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digests[path]

    key = champion(settings).preparation.key
    with session_scope(settings.sqlalchemy_url) as session:
        statuses = session.scalars(select(Document.status)).all()
        pages = session.scalars(select(Page)).all()
        predictions = session.scalar(select(func.count()).select_from(Prediction))
    assert sorted(statuses) == [DocumentStatus.DONE] * len(files)
    assert len(pages) == costs["pages"] == predictions
    assert {page.preparation for page in pages} == {key}
    for page in pages:  # the stored model input is what the model reads: its input size, readable
        assert cv2.imread(page.image_path, cv2.IMREAD_GRAYSCALE).shape == tuple(champion(settings).preparation.size)

    with create_celery(settings, with_tasks=False).connection_for_read() as connection:
        left = connection.SimpleQueue(BENCH_QUEUE)
        with pytest.raises(Empty):  # every message the queue stage sent was taken
            left.get(block=False)
        left.close()


def test_stage_costs_embedded(cli: Cli, bundle_dir: Path, home: Path, tmp_path: Path) -> None:
    files = _files(tmp_path / "batch")
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    cli("db", "upgrade")
    settings = Settings(home=home, bundle=bundle_dir, engine_cache=bundle_dir.parent / "engine-cache")
    costs = stage_costs(files, settings, "onnx", 4, tmp_path / "scratch")
    _check_stage_costs(costs, settings, files, digests)


@pytest.mark.services
def test_stage_costs_services(cli: Cli, bundle_dir: Path, home: Path, tmp_path: Path, redis_server: RedisServer,
                              postgres_url: str) -> None:
    files = _files(tmp_path / "batch")
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    cli.env["ECG_INTAKE_DATABASE_URL"] = postgres_url
    cli("db", "upgrade")
    settings = Settings(home=home, bundle=bundle_dir, engine_cache=bundle_dir.parent / "engine-cache",
                        database_url=postgres_url, broker_url=redis_server.url)
    costs = stage_costs(files, settings, "onnx", 4, tmp_path / "scratch")
    _check_stage_costs(costs, settings, files, digests)


@pytest.mark.slow  # about 3 minutes on 2 cores (the engine bench, two embedded runs, latency): `make test-slow`
@pytest.mark.timeout(900)
def test_bench_pipeline_reports_efficiency_against_its_stages_bound(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    result = cli("bench", "pipeline", "--pages", "12", "--latency-drops", "2", "--json", str(out))
    assert "efficiency" in result.stdout and "core-ms per page" in result.stdout
    report = json.loads(out.read_text())
    embedded, cores = report["embedded"], os.cpu_count()
    assert report["cpu_count"] == cores
    costs = embedded["stage_costs"]
    assert costs["pages"] == 12 and set(costs["core_ms_per_page"]) == set(STAGES)
    assert embedded["bound_pages_per_s"] == pytest.approx(1000 * cores / costs["sum_core_ms_per_page"], abs=0.01)
    assert embedded["efficiency"] == pytest.approx(embedded["pages_per_s"] / embedded["bound_pages_per_s"], abs=1e-3)
    assert embedded["pages_per_s_over_engine_alone"] == pytest.approx(
        embedded["pages_per_s"] / report["best_cpu_engine"]["images_per_s"], abs=1e-3)
    assert set(embedded["pages_per_s_by_ingest_workers"]) == {"1", "2"}
    assert embedded["ingest_workers"] == 2 and embedded["pages_per_s_by_ingest_workers"]["2"] == embedded["pages_per_s"]
    assert embedded["pages"] == 12 and embedded["quarantined"] == 0
    assert 0 < embedded["cpu_utilisation"] <= 1
    gpu = report["gpu_estimate"]
    assert gpu["kind"] == "estimate" and gpu["intake_core_ms_per_page"] == costs["intake_core_ms_per_page"]
    assert gpu["intake_cores_per_gpu"] == pytest.approx(gpu["gpu_images_per_s"] * gpu["intake_core_ms_per_page"]
                                                        / 1000, abs=0.06)
    assert report["latency"]["drops"] == 2 and report["latency"]["p95_s"] > 0
