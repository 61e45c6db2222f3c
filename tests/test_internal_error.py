"""A fault of ecg-intake itself on a good file: quarantined as `internal_error`, and dropped in again it is
processed afresh and ends `done` (the README's "drop the file in again to retry it").

The fault is real, not mocked: a decoder whose page-size limit is misconfigured (None, which the settings
would refuse but a code path could still hand over) raises a TypeError inside the real decoder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from ingest.decode.isolated import Decoder
from ingest.decode.limits import DecodeLimits
from tests.helpers.cli import Cli
from tests.helpers.intake import drop_and_claim, ecg_png, intake_settings, stored
from worker.intake import give_up, intake


def _quarantined(home: Path) -> list[Path]:
    return sorted(p for p in (home / "quarantine").rglob("*") if p.is_file())


def _dropped_again(cli: Cli, url: str, source: Path, inbox: Path, sha256: str) -> dict:
    """The operator drops the same file in again and the real pipeline retries it: the same document ends done
    (not a duplicate sighting), with its page and prediction."""
    shutil.copyfile(source, inbox / source.name)
    cli("run", "--once", "--inbox", str(inbox))
    rows = stored(url)
    assert rows["documents"] == [(sha256, "done", None)]
    assert len(rows["pages"]) == 1 and len(rows["predictions"]) == 1
    return rows


def test_internal_error_is_quarantined_with_its_reason_and_a_second_drop_retries_it_to_done(
        cli: Cli, home: Path, bundle_dir: Path, tmp_path: Path) -> None:
    settings = intake_settings(home, bundle_dir)
    source = ecg_png(tmp_path / "src" / "scan.png", 51)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    inbox = tmp_path / "inbox"
    taken = drop_and_claim(source, inbox)

    broken = Decoder(DecodeLimits(max_page_pixels=None), isolated=False)  # type: ignore[arg-type]
    result = intake(settings, taken, broken)

    assert result is not None and result.status == "quarantined"
    rows = stored(settings.sqlalchemy_url)
    assert rows["documents"] == [(sha256, "quarantined", "internal_error")]
    assert rows["pages"] == [] and rows["predictions"] == []
    original, report = _quarantined(home)
    assert original.name.endswith("__scan.png") and original.read_bytes() == source.read_bytes()
    assert report.name == original.name + ".reason.json"
    reason = json.loads(report.read_text())
    assert reason["reason"] == "internal_error" and "TypeError" in reason["message"]
    assert not taken.claimed.exists()

    rows = _dropped_again(cli, settings.sqlalchemy_url, source, inbox, sha256)
    assert "retried" in rows["events"] and "duplicate_sighting" not in rows["events"]
    assert rows["events"][-1] == "classified"
    (result_row,) = cli.results()
    assert result_row["status"] == "done" and result_row["reason"] is None
    archived = [p for p in (home / "archive").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in archived] == [source.read_bytes()]
    assert [p.name for p in _quarantined(home)] == [original.name, report.name]  # nothing is ever deleted
    assert [p for p in inbox.rglob("*") if p.is_file()] == []


def test_a_task_that_failed_for_good_is_quarantined_as_internal_error_and_retried_when_dropped_again(
        cli: Cli, home: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """`give_up` (a task's retries spent) on a file that was already decoded: quarantined with its reason,
    not left claimed; dropped in again, it ends done."""
    settings = intake_settings(home, bundle_dir)
    source = ecg_png(tmp_path / "src" / "scan.png", 52)
    inbox = tmp_path / "inbox"
    taken = drop_and_claim(source, inbox)
    decoded = intake(settings, taken, Decoder(settings.decode_limits(), isolated=False))
    assert decoded is not None and decoded.status == "decoded"

    give_up(settings, taken, RuntimeError("classify crashed"))

    rows = stored(settings.sqlalchemy_url)
    assert rows["documents"] == [(decoded.sha256, "quarantined", "internal_error")]
    report = next(p for p in _quarantined(home) if p.name.endswith(".reason.json"))
    reason = json.loads(report.read_text())
    assert reason["reason"] == "internal_error" and "RuntimeError: classify crashed" in reason["message"]
    assert not taken.claimed.exists()

    _dropped_again(cli, settings.sqlalchemy_url, source, inbox, decoded.sha256)
