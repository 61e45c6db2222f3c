"""`ecg-intake bench soak` on a small set: real processes, real servers, and figures that add up.

Sixty files are too few for the memory and throughput verdicts to mean much (the first fifths are warm-up),
so those are checked for being computed from the samples, and the exit code for agreeing with them; loss,
duplicates and outcomes must be exact at any size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from ingest.files import original_name
from tests.helpers.cli import Cli
from tests.helpers.servers import RedisServer
from worker.db.models import Document, DocumentStatus, Event
from worker.settings import embedded_database_url

CHECKS = {"no_loss", "no_duplicates", "memory_flat", "throughput_steady", "outcomes_expected"}
FILES, BAD = 60, 3  # 5% of 60


def _check_backend(run: dict, roles: set[str]) -> None:
    assert run["files"] == FILES and run["bad_files"] == BAD
    assert run["loss"]["total"] == 0 and run["loss"]["lost"] == 0, run["loss"]
    assert run["duplicates"]["total"] == 0, run["duplicates"]
    assert run["documents"] == run["distinct_contents"]
    assert run["duplicate_sightings"] == FILES - run["distinct_contents"]
    assert run["predictions"] == run["pages"] >= FILES - BAD
    assert run["unexpected_count"] == 0, run["unexpected_outcomes"]
    assert sum(sum(outcomes.values()) for outcomes in run["outcomes_by_kind"].values()) == FILES
    assert "done" not in {o for kind in ("corrupt", "truncated", "empty") for o in run["outcomes_by_kind"][kind]}

    assert set(run["checks"]) == CHECKS, run["checks"]
    assert run["checks"]["no_loss"]["passed"] and run["checks"]["no_duplicates"]["passed"]
    assert run["passed"] == all(check["passed"] for check in run["checks"].values())

    memory = run["memory"]
    assert memory["samples"] >= 5 and memory["samples"] <= len(run["samples"])
    assert memory["warm_mb"] > 0 and 0 < memory["end_mb"] <= memory["peak_mb"]
    assert memory["growth"] == pytest.approx((memory["end_mb"] - memory["warm_mb"]) / memory["warm_mb"], abs=2e-3)
    assert memory["passed"] == (memory["growth"] < memory["limit"])
    assert roles <= set(memory["by_role"]), memory["by_role"]
    assert max(sample["processes"] for sample in run["samples"]) >= len(roles)

    throughput = run["throughput"]
    assert throughput["files"] == FILES and len(throughput["per_fifth"]) == 5
    assert all(rate > 0 for rate in throughput["per_fifth"])
    assert throughput["last_vs_second"] == pytest.approx(throughput["per_fifth"][4] / throughput["per_fifth"][1],
                                                         abs=2e-3)


def _soak(cli: Cli, tmp_path: Path, *args: str) -> dict:
    """The bench with its memory and throughput limits out of reach (sixty files are mostly warm-up), so the exit
    code depends on loss, duplicates and outcomes only: it must be 0."""
    out = tmp_path / "soak.json"
    result = cli("bench", "soak", "--files", str(FILES), "--interval", "0.3", "--json", str(out),
                 "--memory-limit", "1000", "--throughput-limit", "1.0", "--keep", str(tmp_path / "work"), *args,
                 check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    soak = json.loads(out.read_text())
    assert soak["passed"]
    assert soak["passed"] == all(run["passed"] for run in soak["backends"].values())
    assert soak["files"] == FILES and soak["bad_files"] == BAD
    assert sum(soak["kinds"].values()) == FILES
    return soak


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _audit_folders(work: Path, backend: str) -> dict[str, list[Path]]:
    """Not the bench's own audit: every dropped file (`s<index>-<kind><ext>`) lies exactly once in the archive or
    the quarantine, unchanged under its sha256 prefix, a reason beside each quarantined one, nothing in the inbox."""
    home = work / f"{backend}-home"
    archived = _files(home / "archive")
    quarantined = [p for p in _files(home / "quarantine") if not p.name.endswith(".reason.json")]
    names = [original_name(p) for p in archived + quarantined]
    assert sorted(name.split("-", 1)[0] for name in names) == [f"s{i:05d}" for i in range(FILES)], names
    for kept in archived + quarantined:
        assert kept.name.startswith(hashlib.sha256(kept.read_bytes()).hexdigest()[:12]), kept
    assert all(p.with_name(p.name + ".reason.json").is_file() for p in quarantined)
    assert _files(work / f"{backend}-inbox") == []  # the inbox and its .claimed/
    kinds = {original_name(p).split("-", 1)[1].split(".", 1)[0] for p in archived if "duplicates" not in p.parts}
    assert not kinds & {"corrupt", "truncated", "empty"}, kinds
    return {"archived": archived, "quarantined": quarantined}


def _audit_database(url: str, placed: dict[str, list[Path]]) -> None:
    """One document row per distinct content, with the outcome its folder says; copies are sightings, not rows."""
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            rows = {sha: (status, reason) for sha, status, reason in
                    session.execute(select(Document.sha256, Document.status, Document.reason))}
            sightings = session.scalar(select(func.count()).select_from(Event)
                                       .where(Event.action == "duplicate_sighting"))
    finally:
        engine.dispose()
    first = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in placed["archived"] + placed["quarantined"]
             if "duplicates" not in p.parts}
    assert set(rows) == set(first), "a document row without its file, or a file without its row"
    copies = [p for p in placed["archived"] if "duplicates" in p.parts]
    assert sightings == len(copies)
    for sha, path in first.items():
        status, reason = rows[sha]
        kind = original_name(path).split("-", 1)[1].split(".", 1)[0]
        if path in placed["archived"]:
            assert status == DocumentStatus.DONE, (path, status)
        else:
            assert status == DocumentStatus.QUARANTINED, (path, status)
            if kind in ("truncated", "empty"):  # the reason is the damage done, whatever the format
                assert reason == kind, (path, reason)


@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
@pytest.mark.timeout(900)  # the bench alone may take 600 s
def test_soak_embedded(cli: Cli, tmp_path: Path) -> None:
    soak = _soak(cli, tmp_path)
    assert set(soak["backends"]) == {"embedded"}
    _check_backend(soak["backends"]["embedded"], {"run", "inference"})
    placed = _audit_folders(tmp_path / "work", "embedded")
    _audit_database(embedded_database_url(tmp_path / "work" / "embedded-home"), placed)


@pytest.mark.services
@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
@pytest.mark.timeout(900)  # the bench alone may take 600 s
def test_soak_services(cli: Cli, tmp_path: Path, redis_server: RedisServer, postgres_url: str) -> None:
    soak = _soak(cli, tmp_path, "--backend", "services", "--redis-url", redis_server.url,
                 "--database-url", postgres_url)
    assert set(soak["backends"]) == {"services"}
    _check_backend(soak["backends"]["services"], {"watch", "ingest", "infer"})
    _audit_folders(tmp_path / "work", "services")  # its database is dropped with the bench's fresh one


def test_soak_services_without_servers_is_refused(cli: Cli) -> None:
    result = cli("bench", "soak", "--backend", "services", "--files", "10", check=False)
    assert result.returncode == 2
    assert "--redis-url and --database-url" in result.stdout
