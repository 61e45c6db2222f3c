"""The nightly retraining end to end, small: a real champion, real files through intake, real reviews, real
training, the real decision.

The champion learns from clean pages of our renderer; the hospital's reviewed pages are phone photos of
printouts, a style it never saw. Fine-tuning on them must win on the held-out reviewed pages and serve the
next batch; the same pages with random labels must not be promoted; a second run while one holds the
lock is refused.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from model_training.manifest import LABELS, load_manifest
from tests.helpers.cli import Cli
from worker.db.models import Document, JobLock, ModelVersion, Page
from worker.db.queries import add_review, add_user
from worker.db.session import get_engine, session_scope
from worker.settings import embedded_database_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

SIZE = "[128,256]"
RETRAIN_ENV = {
    "ECG_INTAKE_RETRAIN_MIN_REVIEWS": "50",
    "ECG_INTAKE_RETRAIN_HOLDOUT_PERCENT": "40",
    "ECG_INTAKE_RETRAIN_EPOCHS": "6",
    "ECG_INTAKE_RETRAIN_CLASS_TOLERANCE": "0.05",  # one class's AUROC on ~140 pages moves by that much by chance
    "ECG_INTAKE_RETRAIN_REPLAY_PAGES": "64",
    "ECG_INTAKE_RETRAIN_SYNTHETIC_PAGES": "96",
    "ECG_INTAKE_RETRAIN_SYNTHETIC_FLOOR": "0.5",
    "ECG_INTAKE_RETRAIN_BOOTSTRAP": "500",
}


@dataclass
class Reviewed:
    home: Path
    champion: Path
    truth: dict[str, list[str]]  # dropped file name -> its true findings
    env: dict[str, str]


def _findings(row: dict[str, str]) -> list[str]:
    return [label for label in LABELS if row[label] == "1"]


def _drop(cli: Cli, out: Path, inbox: Path, n: int, seed: int, artifacts: str) -> dict[str, list[str]]:
    """`ecg-intake synth` pages moved into the inbox without their labels.csv; returns name -> findings."""
    cli("synth", "--out", str(out), "--n", str(n), "--seed", str(seed), "--artifacts", artifacts, "--dpi", "120")
    with open(out / "labels.csv") as handle:
        truth = {f"{seed}-{row['file']}": _findings(row) for row in csv.DictReader(handle)}
    inbox.mkdir(parents=True, exist_ok=True)
    for name in truth:
        shutil.move(out / name.split("-", 1)[1], inbox / name)
    return truth


@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Reviewed:
    """A champion trained briefly on clean pages, and 360 photographed pages it classified (no reviews yet)."""
    root = tmp_path_factory.mktemp("retrain")
    home = root / "home"
    env = _env(home, bundle_dir)
    cli = Cli(env, root)
    champion = root / "champion"
    cli("train", "--config", "stage1", "--set", "name=champion", "--set", f"input_size={SIZE}",
        "--set", 'data=[{"kind": "synthetic", "n": 320, "seed": 11, "artifacts": "none", "dpi": 150}]',
        "--set", 'validation=[{"kind": "synthetic", "n": 96, "seed": 12, "artifacts": "none", "dpi": 150}]',
        "--set", "total_pages=640", "--set", "warmup_pages=96", "--set", "eval_every_pages=640",
        "--set", "checkpoint_every_pages=640", "--set", f"out_dir={root / 'runs'}",
        "--set", f"cache_dir={root / 'cache'}", "--set", f"bundle_dir={champion}", "--set", "export=false",
        timeout=1800)
    env["ECG_INTAKE_BUNDLE"] = str(champion)
    truth = _drop(Cli(env, root), root / "synth", root / "inbox", 360, 500, "photo")
    Cli(env, root)("run", "--inbox", str(root / "inbox"), "--once", timeout=1800)
    return Reviewed(home, champion, truth, env)


def _env(home: Path, bundle: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    return {**env, **RETRAIN_ENV, "ECG_INTAKE_HOME": str(home), "ECG_INTAKE_BUNDLE": str(bundle),
            "ECG_INTAKE_STABLE_SECONDS": "0.2", "ECG_INTAKE_POLL_INTERVAL": "0.2", "ECG_INTAKE_TORCH_THREADS": "2",
            "ECG_INTAKE_DIGITISE": "false",  # 360 pages read back would add minutes; retraining reads none of it
            "PYTHONUNBUFFERED": "1"}


def _copy(classified: Reviewed, tmp_path: Path) -> tuple[Cli, Path]:
    """The classified installation copied, so each test reviews it its own way (page images stay shared)."""
    home = tmp_path / "home"
    shutil.copytree(classified.home, home)
    return Cli({**classified.env, "ECG_INTAKE_HOME": str(home)}, tmp_path), home


def _review(home: Path, labels_for: dict[str, list[str]]) -> int:
    url = embedded_database_url(home)
    with session_scope(url) as session:
        reviewer = add_user(session, "dr-test", "not-a-real-hash", "reviewer")
        rows = session.execute(select(Page.id, Document.path).join(Document, Document.id == Page.document_id))
        count = 0
        for page_id, path in rows:
            add_review(session, page_id, reviewer.id, labels_for[Path(path).name], None)
            count += 1
    get_engine(url).dispose()
    return count


def _versions(home: Path) -> dict[str, str]:
    url = embedded_database_url(home)
    with session_scope(url) as session:
        found = {row.name: row.status for row in session.scalars(select(ModelVersion))}
    get_engine(url).dispose()
    return found


def test_reviews_of_a_new_style_promote_a_challenger_that_classifies_the_next_batch(
        classified: Reviewed, tmp_path: Path) -> None:
    cli, home = _copy(classified, tmp_path)
    assert _review(home, classified.truth) == len(classified.truth)
    champion = load_manifest(classified.champion).model_version

    first = subprocess.Popen(cli.command("retrain", "--now", "--json"), env=cli.env, cwd=cli.cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = embedded_database_url(home)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with session_scope(url) as session:
            if session.get(JobLock, "retrain") is not None:
                break
        time.sleep(0.2)
    else:
        first.kill()
        pytest.fail(f"the first retrain never took its lock: {first.communicate()}")
    second = cli("retrain", "--now", check=False)
    assert second.returncode == 3, second
    assert "already running" in " ".join(second.stderr.split()) + " ".join(second.stdout.split())

    stdout, stderr = first.communicate(timeout=1200)
    assert first.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["status"] == "promoted", json.dumps(report["decision"], indent=1)
    counts = report["counts"]
    assert counts["holdout"] + counts["validation"] + counts["train"] == len(classified.truth)
    assert counts["replay"] == 64
    comparison = report["comparison"]
    assert comparison["macro_auroc_diff"] >= 0.01 and comparison["macro_auroc_diff_ci"][0] > 0
    assert report["holdout"]["challenger"]["macro_auroc"] > report["holdout"]["champion"]["macro_auroc"]
    assert report["challenger_synthetic"] >= 0.5
    versions = _versions(home)
    assert versions[report["challenger"]] == "champion" and versions[champion] == "retired"
    with session_scope(url) as session:
        assert session.get(JobLock, "retrain") is None  # released
    get_engine(url).dispose()

    # The next batch is classified by the new champion, although ECG_INTAKE_BUNDLE still names the old one.
    truth = _drop(cli, tmp_path / "synth", tmp_path / "inbox", 6, 900, "photo")
    cli("run", "--inbox", str(tmp_path / "inbox"), "--once", timeout=600)
    rows = {Path(r["path"]).name: r for r in cli.results()}
    assert {rows[name]["model_version"] for name in truth} == {report["challenger"]}

    listed = json.loads(cli("model", "list", "--json").stdout)
    assert [r["status"] for r in listed if r["name"] == report["challenger"]] == ["champion"]
    # Rolling back serves the old champion again.
    cli("model", "rollback")
    assert _versions(home)[champion] == "champion"


def test_reviews_with_random_labels_are_not_promoted(classified: Reviewed, tmp_path: Path) -> None:
    cli, home = _copy(classified, tmp_path)
    rng = np.random.default_rng(7)
    shuffled = {name: [label for label in LABELS if rng.random() < 0.3] for name in classified.truth}
    _review(home, shuffled)
    report = json.loads(cli("retrain", "--now", "--json", timeout=1200).stdout)
    assert report["status"] == "rejected", report
    assert report["decision"]["reasons"]
    versions = _versions(home)
    assert versions[report["challenger"]] == "rejected"
    assert versions[load_manifest(classified.champion).model_version] == "champion"


def test_too_few_new_reviews_skip_the_run_with_a_reason(classified: Reviewed, tmp_path: Path) -> None:
    cli, home = _copy(classified, tmp_path)
    report = json.loads(cli("retrain", "--now", "--json").stdout)
    assert report["status"] == "skipped"
    assert "0 new review(s)" in report["reason"] and "at least 50" in report["reason"]
    assert len(_versions(home)) == 1
