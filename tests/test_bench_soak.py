"""`ecg-intake bench soak` on a small set: real processes, real servers, and figures that add up.

Sixty files are too few for the memory and throughput verdicts to mean much (the first fifths are warm-up),
so those are checked for being computed from the samples, and the exit code for agreeing with them; loss,
duplicates and outcomes must be exact at any size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import Cli
from tests.helpers.servers import RedisServer

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
    out = tmp_path / "soak.json"
    result = cli("bench", "soak", "--files", str(FILES), "--interval", "0.3", "--json", str(out), *args,
                 check=False, timeout=600)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    soak = json.loads(out.read_text())
    assert (result.returncode == 0) == soak["passed"]
    assert soak["passed"] == all(run["passed"] for run in soak["backends"].values())
    assert soak["files"] == FILES and soak["bad_files"] == BAD
    assert sum(soak["kinds"].values()) == FILES
    return soak


@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
def test_soak_embedded(cli: Cli, tmp_path: Path) -> None:
    soak = _soak(cli, tmp_path)
    assert set(soak["backends"]) == {"embedded"}
    _check_backend(soak["backends"]["embedded"], {"run", "inference"})


@pytest.mark.services
@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
def test_soak_services(cli: Cli, tmp_path: Path, redis_server: RedisServer, postgres_url: str) -> None:
    soak = _soak(cli, tmp_path, "--backend", "services", "--redis-url", redis_server.url,
                 "--database-url", postgres_url)
    assert set(soak["backends"]) == {"services"}
    _check_backend(soak["backends"]["services"], {"watch", "ingest", "infer"})


def test_soak_services_without_servers_is_refused(cli: Cli) -> None:
    result = cli("bench", "soak", "--backend", "services", "--files", "10", check=False)
    assert result.returncode == 2
    assert "--redis-url and --database-url" in result.stdout
