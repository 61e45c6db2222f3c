"""The model registry, its lock and the promotion rule, on real databases; and a running service that
switches to a new champion between files without losing or repeating one."""

from __future__ import annotations

import hashlib
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from model_training.bundle import create_untrained_bundle
from model_training.evaluate import paired_comparison
from model_training.manifest import LABELS, Manifest
from tests.helpers.bundle import TEST_INPUT_SIZE
from tests.helpers.cli import Cli
from tests.helpers.inputs import reference_page
from worker.db.migrate import upgrade
from worker.db.models import Document, JobLock, ModelVersion, Prediction
from worker.db.session import get_engine, session_scope
from worker.locks import LockHeld, lease
from worker.registry import RegistryError, promote, register, rollback
from worker.retrain import decide, split_of
from worker.settings import Settings, embedded_database_url


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_the_split_is_stable_per_document_and_near_the_configured_shares() -> None:
    parts = [split_of(_sha(i), 20, 10) for i in range(5000)]
    assert parts == [split_of(_sha(i), 20, 10) for i in range(5000)]
    share = {part: parts.count(part) / len(parts) for part in ("holdout", "validation", "train")}
    assert abs(share["holdout"] - 0.20) < 0.02 and abs(share["validation"] - 0.08) < 0.015
    # A larger holdout only moves documents out of training, never out of the holdout.
    assert all(split_of(_sha(i), 30, 10) == "holdout" for i in range(5000) if parts[i] == "holdout")


def test_a_better_model_has_a_gain_whose_paired_interval_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((300, 5)) < 0.3).astype(int)
    weak = np.clip(truth * 0.15 + rng.random((300, 5)), 0, 1)
    strong = np.clip(truth * 0.6 + rng.random((300, 5)), 0, 1)
    better = paired_comparison(truth, weak, strong, LABELS, n_bootstrap=300)
    assert better["macro_auroc_diff"] > 0.1 and better["macro_auroc_diff_ci"][0] > 0
    same = paired_comparison(truth, weak, weak, LABELS, n_bootstrap=300)
    assert same["macro_auroc_diff"] == 0 and same["macro_auroc_diff_ci"] == [0, 0]
    truth[:, 4] = 0  # a class with no positive page has no AUROC to compare
    assert paired_comparison(truth, weak, strong, LABELS, n_bootstrap=50)["undefined_classes"] == ["HYP"]


def _comparison(gain: float, low: float, per_class: dict[str, float] | None = None) -> dict:
    return {"macro_auroc_diff": gain, "macro_auroc_diff_ci": [low, gain + 0.05],
            "per_class_auroc_diff": per_class or dict.fromkeys(LABELS, gain)}


@pytest.mark.parametrize(("comparison", "synthetic", "promoted", "reason"), [
    (_comparison(0.05, 0.02), 0.9, True, ""),
    (_comparison(0.005, 0.001), 0.9, False, "below the margin"),
    (_comparison(0.05, -0.01), 0.9, False, "may be luck"),
    (_comparison(0.05, 0.02, {**dict.fromkeys(LABELS, 0.08), "HYP": -0.03}), 0.9, False, "HYP AUROC drops"),
    (_comparison(0.05, 0.02), 0.80, False, "below the floor"),
    (_comparison(float("nan"), float("nan"), {}), 0.9, False, "no class with both"),
])
def test_the_promotion_rule(comparison: dict, synthetic: float, promoted: bool, reason: str) -> None:
    decision = decide(comparison, synthetic, Settings(retrain_margin=0.01, retrain_class_tolerance=0.02,
                                                      retrain_synthetic_floor=0.85))
    assert decision.promote is promoted
    assert all(reason in text for text in decision.reasons[:1]) and bool(decision.reasons) is not promoted


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = (f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    upgrade(url)
    yield url
    get_engine(url).dispose()


def test_the_lock_admits_one_holder_and_a_dead_holders_lock_expires(db_url: str) -> None:
    with lease(db_url, "retrain", ttl_seconds=60) as refresh:
        with pytest.raises(LockHeld, match="already running"), lease(db_url, "retrain", 60):
            pytest.fail("a second holder got the lock")
        refresh()
        with lease(db_url, "other-job", 60):  # other jobs are not blocked
            pass
    with lease(db_url, "retrain", 60):  # released at the end of the block
        pass

    # A holder that stopped refreshing (a killed process) loses the lock once it expires ...
    with lease(db_url, "retrain", ttl_seconds=60) as stale_refresh:
        with session_scope(db_url) as session:
            session.execute(update(JobLock).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        # ... and if it wakes up, its next refresh says so instead of running on beside the new holder.
        with lease(db_url, "retrain", 60), pytest.raises(LockHeld):
            stale_refresh()
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count(JobLock.name))) == 0


def _manifest(name: str) -> Manifest:
    return Manifest(name=name, version=hashlib.sha256(name.encode()).hexdigest()[:12], trained=True)


def test_promotion_retires_and_rollback_goes_back_one_champion_at_a_time(db_url: str) -> None:
    def status() -> dict[str, str]:
        with session_scope(db_url) as session:
            return {row.name.split("@")[0]: row.status for row in session.scalars(select(ModelVersion))}

    with session_scope(db_url) as session:
        for name in ("a", "b", "c"):
            promote(session, register(session, _manifest(name), Path("/models") / name), "test", "by hand")
            time.sleep(0.01)  # distinct promotion times
    assert status() == {"a": "retired", "b": "retired", "c": "champion"}
    with session_scope(db_url) as session:
        gone, restored = rollback(session, "test")
        assert (gone.name[0], restored.name[0]) == ("c", "b")
    with session_scope(db_url) as session:
        rollback(session, "test")
    assert status() == {"a": "champion", "b": "rejected", "c": "rejected"}
    with session_scope(db_url) as session, pytest.raises(RegistryError, match="no earlier champion"):
        rollback(session, "test")
    with session_scope(db_url) as session:  # a rejected version can be put back by hand ...
        c = session.scalar(select(ModelVersion).where(ModelVersion.name.like("c@%")))
        promote(session, c, "test", "by hand")
        with pytest.raises(RegistryError, match="already the champion"):
            promote(session, c, "test", "again")
    with session_scope(db_url) as session:  # ... and rolling back from it returns to the one it replaced
        assert rollback(session, "test")[1].name.startswith("a@")


def _wait_done(url: str, names: set[str], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with session_scope(url) as session:
                done = set(session.scalars(select(Document.path).where(Document.status == "done")))
        except OperationalError:  # `run` has not made its database yet
            done = set()
        if names <= {Path(p).name for p in done}:
            return
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)


@pytest.mark.timeout(1200)  # two waits of up to 240 s and a promote of up to 300 s
def test_a_running_service_serves_a_new_champion_from_the_next_file_on(cli: Cli, home: Path, tmp_path: Path,
                                                                         bundle_dir: Path) -> None:
    """Promote while `run` is live: files before use the old model, files after the new one, each file once."""
    new_bundle = tmp_path / "new-bundle"
    new = create_untrained_bundle(new_bundle, "convnext_atto", TEST_INPUT_SIZE, seed=1).model_version
    cli.env["ECG_INTAKE_CHAMPION_CHECK_SECONDS"] = "0.5"
    inbox, url, log = tmp_path / "inbox", embedded_database_url(home), tmp_path / "run.log"
    inbox.mkdir()
    page = reference_page(1000)
    runner = cli.popen("run", "--inbox", str(inbox), log=log)
    try:
        before = {f"before-{i}.png" for i in range(3)}
        for i, name in enumerate(sorted(before)):
            cv2.imwrite(str(inbox / name), np.roll(page, 7 * i, axis=1))
        _wait_done(url, before, log)
        cli("model", "promote", str(new_bundle))
        time.sleep(1.5)  # longer than the champion check interval
        after = {f"after-{i}.png" for i in range(3)}
        for i, name in enumerate(sorted(after)):
            cv2.imwrite(str(inbox / name), np.roll(page, 11 * i + 3, axis=0))
        _wait_done(url, after, log)
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=90)
    with session_scope(url) as session:
        served = {Path(path).name: version for path, version in session.execute(
            select(Document.path, ModelVersion.name).join(Document.pages).join(Prediction)
            .join(ModelVersion, ModelVersion.id == Prediction.model_version_id))}
        assert session.scalar(select(func.count(Prediction.id))) == len(before | after)
    get_engine(url).dispose()
    old = {m for m in served.values() if m != new}
    assert len(old) == 1 and old.pop().startswith("untrained-convnext_atto@")
    assert all(served[name] != new for name in before) and all(served[name] == new for name in after)
    assert "now serving " + new in log.read_text()


@pytest.mark.parametrize("bad", [{"retrain_schedule": "0 2 *"}, {"retrain_schedule": "61 2 * * *"},
                                 {"timezone": "Mars/Olympus_Mons"}])
def test_a_bad_schedule_or_time_zone_is_refused_when_settings_load(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_the_nightly_schedule_follows_the_settings(tmp_path: Path) -> None:
    from worker.celery_app import RETRAIN_TASK, TASK_ROUTES, create_celery

    app = create_celery(Settings(home=tmp_path, retrain_schedule="30 1 * * 1-5", timezone="Europe/London"),
                        with_tasks=False)
    entry = app.conf.beat_schedule["nightly-retrain"]
    assert entry["task"] == RETRAIN_TASK and entry["options"]["queue"] == TASK_ROUTES[RETRAIN_TASK]["queue"] == "train"
    assert (entry["schedule"].minute, entry["schedule"].hour, entry["schedule"].day_of_week) == ({30}, {1},
                                                                                                   {1, 2, 3, 4, 5})
    assert app.conf.timezone == "Europe/London"


def test_run_sends_the_nightly_job_on_schedule_and_a_worker_runs_it(cli: Cli, home: Path, tmp_path: Path) -> None:
    """Beat inside `run` queues `retrain` on the train queue at the crontab time; with no reviews it is skipped,
    and the skip is recorded with its reason."""
    from worker.db.models import Event

    cli.env["ECG_INTAKE_RETRAIN_SCHEDULE"] = "* * * * *"  # every minute
    inbox, url, log = tmp_path / "inbox", embedded_database_url(home), tmp_path / "run.log"
    inbox.mkdir()
    runner = cli.popen("run", "--inbox", str(inbox), log=log)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with session_scope(url) as session:
                    skipped = list(session.scalars(select(Event).where(Event.action == "retrain_skipped")))
            except OperationalError:
                skipped = []
            if skipped:
                break
            assert time.monotonic() < deadline and runner.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=90)
    get_engine(url).dispose()
    assert skipped[0].actor == "schedule"
    assert "0 new review(s)" in skipped[0].details["reason"]


def test_the_decision_table_reads_a_real_report_and_undefined_figures() -> None:
    import json

    from rich.console import Console

    from worker.cli.model import _report_table

    report = json.loads((Path(__file__).parent.parent / "docs" / "retrain-photos-run.json").read_text())
    report["comparison"]["per_class_auroc_diff_ci"]["HYP"] = [None, None]  # no resample had both HYP values
    console = Console(width=120, record=True)
    console.print(_report_table(report))
    text = console.export_text()
    assert "+0.0006" in text and "-0.008 to +0.009" in text and "n/a to n/a" in text and "floor 0.85" in text
