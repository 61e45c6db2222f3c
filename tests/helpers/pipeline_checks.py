"""Assertions shared by the end-to-end tests: every file accounted for, each page with five probabilities."""

from __future__ import annotations

import json
import time
from pathlib import Path

LABELS = {"MI", "AF", "STTC", "CD", "HYP"}
GOOD = {"ecg-scan.png": 1, "ecg-photo.jpg": 1, "ecg-report.pdf": 2, "ecg-waveform.dcm": 1}
BAD = "bad-random-bytes.pdf"


def check_sample_batch(rows: list[dict], home: Path, inbox: Path) -> None:
    """The sample batch came out whole: good files archived with results, the bad one quarantined."""
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(Path(row["path"]).name, []).append(row)
    assert set(by_file) == {*GOOD, BAD}
    for name, pages in GOOD.items():
        found = by_file[name]
        assert [r["page"] for r in found] == list(range(1, pages + 1)), name
        for row in found:
            assert row["status"] == "done"
            assert set(row["probabilities"]) == LABELS
            assert all(0.0 <= p <= 1.0 for p in row["probabilities"].values())
            assert set(row["labels"]) <= LABELS
            assert row["model_version"].startswith("untrained-convnext_atto@")
    (bad,) = by_file[BAD]
    assert bad["status"] == "quarantined" and bad["reason"] == "unsupported_type" and bad["page"] is None

    archived = sorted(p.name.split("__", 1)[1] for p in (home / "archive").rglob("*") if p.is_file())
    assert archived == sorted(GOOD)
    quarantined = [p for p in (home / "quarantine").rglob("*") if p.is_file()]
    assert sorted(p.name.split("__", 1)[1] for p in quarantined) == sorted([BAD, BAD + ".reason.json"])
    reason = json.loads(next(p for p in quarantined if p.suffix == ".json").read_text())
    assert reason["reason"] == "unsupported_type" and reason["message"]
    assert [p for p in inbox.rglob("*") if p.is_file()] == []  # nothing left behind, nothing lost


def wait_until_inbox_empty(inbox: Path, timeout: float = 60) -> None:
    """Until every file has left the inbox and its claim area: the outcome is committed just before the move, so
    a test that saw the outcomes polls for the moves instead of sleeping a guess."""
    deadline = time.monotonic() + timeout
    while left := [p for p in inbox.rglob("*") if p.is_file()]:
        assert time.monotonic() < deadline, f"still in the inbox after {timeout}s: {left}"
        time.sleep(0.05)
