"""Faults of the installation (missing poppler, unreachable database, schema behind) never cost a file.

Poppler is removed the way a fresh machine lacks it: its tools are not on PATH. The rest of the
system stays as it is, so the real decoders, the real database and the real CLI run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ingest.decode.isolated import Decoder
from ingest.reasons import InstallationError
from ingest.watch import Inbox, claim
from tests.helpers.cli import Cli
from tests.helpers.inputs import vector_pdf
from worker.db.migrate import upgrade
from worker.db.models import Document, DocumentStatus
from worker.db.session import session_scope
from worker.intake import intake
from worker.settings import Settings


@pytest.fixture
def no_poppler_path(tmp_path: Path) -> str:
    """PATH with every directory that holds pdfinfo or pdftoppm replaced by a copy without them."""
    assert shutil.which("pdftoppm"), "poppler-utils must be installed for the healthy half of these tests"
    kept = []
    for index, folder in enumerate(os.environ["PATH"].split(os.pathsep)):
        if not any((Path(folder) / tool).exists() for tool in ("pdfinfo", "pdftoppm")):
            kept.append(folder)
            continue
        shadow = tmp_path / f"path-{index}"
        shadow.mkdir()
        for entry in Path(folder).iterdir():
            if entry.name not in ("pdfinfo", "pdftoppm") and not entry.name.startswith("pdf"):
                (shadow / entry.name).symlink_to(entry)
        kept.append(str(shadow))
    stripped = os.pathsep.join(kept)
    assert shutil.which("pdftoppm", path=stripped) is None and shutil.which("python3", path=stripped)
    return stripped


@pytest.mark.parametrize("isolated", [True, False])
def test_missing_poppler_keeps_the_pdf_claimed_and_a_later_intake_succeeds(
    tmp_path: Path, bundle_dir: Path, no_poppler_path: str, monkeypatch: pytest.MonkeyPatch, isolated: bool,
) -> None:
    settings = Settings(home=tmp_path / "home", bundle=bundle_dir)
    settings.ensure_dirs()
    upgrade(settings.sqlalchemy_url)
    inbox = Inbox(path=tmp_path / "inbox", source="ward")
    inbox.path.mkdir()
    taken = claim(vector_pdf(inbox.path / "resting.pdf"), inbox)
    assert taken is not None

    monkeypatch.setenv("PATH", no_poppler_path)
    with Decoder(settings.decode_limits(), isolated=isolated) as decoder, \
            pytest.raises(InstallationError, match="apt-get install poppler-utils"):
        intake(settings, taken, decoder)
    assert taken.claimed.exists()
    assert not any(settings.quarantine_dir.rglob("*.pdf"))
    with session_scope(settings.sqlalchemy_url) as session:  # recorded with its pages, once they decode
        assert session.query(Document).count() == 0

    monkeypatch.undo()  # the operator installs poppler; the retried claim goes through
    with Decoder(settings.decode_limits(), isolated=isolated) as decoder:
        result = intake(settings, taken, decoder)
    assert result is not None and result.status == DocumentStatus.DECODED


def test_run_refuses_to_start_without_poppler_and_touches_no_file(cli: Cli, home: Path, tmp_path: Path,
                                                                  no_poppler_path: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    pdf = vector_pdf(inbox / "resting.pdf")
    cli.env["PATH"] = no_poppler_path
    result = cli("run", "--inbox", str(inbox), "--once", check=False)
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.split())
    assert "poppler" in said and "apt-get install poppler-utils" in said
    assert pdf.exists() and not (inbox / ".claimed").exists()
    assert not (home / "quarantine").exists() or not any((home / "quarantine").rglob("*"))


def test_doctor_on_a_healthy_installation(cli: Cli, home: Path) -> None:
    cli("db", "upgrade")
    result = cli("doctor", "--json", "--inbox", f"ward={home.parent / 'inbox'}")
    report = json.loads(result.stdout)
    by_name = {check["name"]: check for check in report["checks"]}
    assert report["ok"] is True
    assert by_name["database"]["status"] == "ok" and "newest migration" in by_name["database"]["detail"]
    assert by_name["poppler"]["status"] == "ok" and "pdftoppm" in by_name["poppler"]["detail"]
    assert by_name["archive"]["status"] == "ok" and "writable" in by_name["archive"]["detail"]
    assert by_name["inbox ward"]["status"] == "ok" and "filesystem events" in by_name["inbox ward"]["detail"]
    assert by_name["model"]["status"] == "warn" and "UNTRAINED" in by_name["model"]["detail"]
    assert "cpu" in by_name["engines"]["detail"] and "tensorrt:" in by_name["engines"]["detail"]
    table = cli("doctor")
    assert "ecg-intake doctor" in table.stdout and "fail" not in table.stdout


def test_doctor_names_each_fault_of_a_broken_installation(cli: Cli, tmp_path: Path, postgres_url: str,
                                                          no_poppler_path: str) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "home").write_text("a file where the data folder must go")
    cli.env.update({
        "PATH": no_poppler_path,
        "ECG_INTAKE_HOME": str(locked / "home" / "data"),
        "ECG_INTAKE_DATABASE_URL": postgres_url,  # reachable, but its schema was never created
        "ECG_INTAKE_BROKER_URL": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        "ECG_INTAKE_BUNDLE": str(tmp_path / "no-bundle"),
    })
    result = cli("doctor", "--json", check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    failed = {check["name"]: check for check in report["checks"] if check["status"] == "fail"}
    assert report["ok"] is False
    assert set(failed) >= {"database", "broker", "archive", "poppler", "model"}
    assert failed["database"]["fix"] == "ecg-intake db upgrade"
    assert "cannot reach" in failed["broker"]["detail"]
    assert "not writable" in failed["archive"]["detail"]
    assert "apt-get install poppler-utils" in failed["poppler"]["fix"]
    assert "manifest.json" in failed["model"]["detail"]


def test_server_database_is_never_migrated_implicitly(cli: Cli, tmp_path: Path, postgres_url: str) -> None:
    from worker.db.migrate import current_revision

    cli.env["ECG_INTAKE_DATABASE_URL"] = postgres_url
    for command in (["watch", "--inbox", str(tmp_path / "inbox"), "--once"], ["results"]):
        result = cli(*command, check=False)
        assert result.returncode == 2, result.stderr
        assert "ecg-intake db upgrade" in " ".join(result.stderr.split())  # rich wraps long lines
    assert current_revision(postgres_url) is None
    cli("db", "upgrade")
    assert cli("results", "--format", "json").stdout.strip() == "[]"
