"""End to end on the embedded default (SQLite + file broker) through the real `ecg-intake` command."""

from __future__ import annotations

import shutil
from pathlib import Path

from model_training.synth.samples import reference_dicom, write_samples
from tests.helpers.cli import Cli
from tests.helpers.pipeline_checks import check_sample_batch
from worker.settings import embedded_database_url


def test_run_once_processes_a_batch_and_quarantines_bad_input(cli: Cli, home: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_samples(inbox)
    result = cli("run", "--inbox", str(inbox), "--once")
    assert "UNTRAINED" in result.stderr  # the CLI warns loudly about the placeholder model
    said = result.stdout + result.stderr
    assert "claimed 5 file(s)" in said and "quarantined: unsupported_type" in said  # what the user came for
    assert "decoded:" not in said and "engine auto" not in said  # progress lines are for the log level INFO
    assert "superuser privileges" not in said and "torch.onnx" not in said  # library chatter stays out
    check_sample_batch(cli.results(), home, inbox)

    # The DICOM's identifiers reach the document record, and never the log.
    import pydicom
    from sqlalchemy import create_engine, text

    source = pydicom.dcmread(reference_dicom())
    for identifier in (source.PatientID, str(source.PatientName), source.AccessionNumber, "ecg-waveform"):
        assert identifier not in result.stdout + result.stderr
    engine = create_engine(embedded_database_url(home))
    with engine.connect() as conn:
        stored = [row[0] for row in conn.execute(text("select source_metadata from documents where file_type='dicom'"))]
    assert len(stored) == 1 and source.PatientID in stored[0]


def test_same_file_dropped_twice_is_processed_once(cli: Cli, home: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    paths = write_samples(tmp_path / "src", with_bad=False)
    png = next(p for p in paths if p.suffix == ".png")
    inbox.mkdir()
    shutil.copy(png, inbox / "first.png")
    shutil.copy(png, inbox / "copy-in-same-batch.png")
    cli("run", "--inbox", str(inbox), "--once")
    shutil.copy(png, inbox / "dropped-again-later.png")
    cli("run", "--inbox", str(inbox), "--once")

    rows = cli.results()
    assert len(rows) == 1 and rows[0]["status"] == "done"
    stored = sorted(p.name.split("__", 1)[1] for p in (home / "archive").rglob("*") if p.is_file())
    assert len(stored) == 3  # nothing deleted: the first is archived, the two sightings beside it
    assert sorted(p.parent.parent.name for p in (home / "archive").rglob("*.png")).count("duplicates") == 2

    from sqlalchemy import create_engine, text

    engine = create_engine(embedded_database_url(home))
    with engine.connect() as conn:
        sightings = conn.execute(text("select count(*) from events where action='duplicate_sighting'")).scalar()
        predictions = conn.execute(text("select count(*) from predictions")).scalar()
    assert sightings == 2 and predictions == 1


def test_run_once_with_nothing_to_do_exits_cleanly(cli: Cli, tmp_path: Path) -> None:
    inbox = tmp_path / "empty-inbox"
    inbox.mkdir()
    result = cli("run", "--inbox", str(inbox), "--once")
    assert "claimed 0 file(s)" in result.stderr
    assert cli.results() == []


def test_missing_bundle_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    cli.env["ECG_INTAKE_BUNDLE"] = str(tmp_path / "no-such-bundle")
    result = cli("run", "--inbox", str(tmp_path / "inbox"), "--once", check=False)
    assert result.returncode == 2
    assert "manifest.json" in result.stderr


def test_an_unwritable_page_folder_keeps_the_file_claimed_until_fixed(cli: Cli, home: Path, tmp_path: Path) -> None:
    """A fault of the installation (here: its page folder cannot be created) never quarantines the file, whichever
    of `run`'s two ingest processes meets it (the second tells `--once` through its report file)."""
    import hashlib

    cli.env["ECG_INTAKE_INGEST_CONCURRENCY"] = "2"

    inbox = tmp_path / "inbox"
    paths = write_samples(tmp_path / "src", with_bad=False)
    inbox.mkdir()
    for path in paths:
        if path.suffix in (".png", ".jpg"):
            shutil.copy(path, inbox / path.name)
    victim = inbox / "ecg-scan.png"
    sha = hashlib.sha256(victim.read_bytes()).hexdigest()
    blocker = home / "pages" / sha[:2]
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a folder must go")

    result = cli("run", "--inbox", str(inbox), "--once", check=False)
    said = " ".join(result.stderr.split())  # rich wraps long lines
    assert result.returncode == 1 and "installation fault" in said, result.stderr
    assert "stay claimed, none quarantined" in said
    rows = {Path(r["path"]).name: r for r in cli.results()}
    assert rows["ecg-photo.jpg"]["status"] == "done"  # the worker kept going
    assert "ecg-scan.png" not in rows  # recorded in one transaction with its pages, once they are written
    assert not list((home / "quarantine").rglob("*ecg-scan.png"))
    assert [p.name for p in inbox.rglob("*ecg-scan.png")], "the file must still be in the inbox's claim folder"

    blocker.unlink()  # the fault is fixed; the next start picks the claim up again
    cli("run", "--inbox", str(inbox), "--once")
    rows = {Path(r["path"]).name: r for r in cli.results()}
    assert rows["ecg-scan.png"]["status"] == "done" and len(rows["ecg-scan.png"]["probabilities"]) == 5
    assert not list(inbox.rglob("*ecg-scan.png"))


def test_run_starts_its_inference_process_again_after_a_crash(cli: Cli, home: Path, tmp_path: Path) -> None:
    """`run` supervises its classifier child: SIGKILL it and files dropped afterwards are still classified."""
    import os
    import signal
    import subprocess
    import time

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    runner = cli.popen("run", "--inbox", str(inbox), log=tmp_path / "run.log")
    try:
        deadline = time.monotonic() + 120
        child = ""
        while not child:
            assert time.monotonic() < deadline and runner.poll() is None, (tmp_path / "run.log").read_text()
            child = subprocess.run(["pgrep", "-P", str(runner.pid), "-f", "queues infer"], capture_output=True,
                                   text=True).stdout.strip()
            time.sleep(0.2)
        os.kill(int(child.split()[0]), signal.SIGKILL)
        write_samples(tmp_path / "src", with_bad=False)
        for path in sorted((tmp_path / "src").iterdir()):
            if path.suffix in (".png", ".jpg"):
                shutil.copy(path, inbox / path.name)
        while len([r for r in cli.results() if r["status"] == "done"]) < 2:
            assert time.monotonic() < deadline + 120, (tmp_path / "run.log").read_text()
            time.sleep(0.5)
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=60)
    assert "inference process exited with code -9; starting it again" in (tmp_path / "run.log").read_text()


def test_installation_faults_in_every_ingest_process_are_reported_by_run_once(cli: Cli, home: Path,
                                                                              tmp_path: Path) -> None:
    """With every file's page folder blocked, each meets the fault in whichever ingest process takes it: `--once`
    must hear the further process's faults too (else it waits on their claims), and keep every file claimed."""
    import hashlib

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (home / "pages").mkdir(parents=True)
    for path in write_samples(tmp_path / "src", with_bad=False):
        shutil.copy(path, inbox / path.name)
        blocker = home / "pages" / hashlib.sha256(path.read_bytes()).hexdigest()[:2]
        blocker.write_text("a file where a folder must go")
    cli.env["ECG_INTAKE_INGEST_CONCURRENCY"] = "2"

    result = cli("run", "--inbox", str(inbox), "--once", check=False)
    said = " ".join(result.stderr.split())
    assert result.returncode == 1 and "installation fault" in said, result.stderr
    assert "stay claimed, none quarantined" in said
    dropped = sorted(p.name for p in tmp_path.joinpath("src").iterdir() if p.is_file())
    claimed = sorted(p.name.split("__", 1)[1] for p in (inbox / ".claimed").iterdir())
    assert claimed == dropped and cli.results() == []
    assert not any((home / "quarantine").rglob("*.*"))
