"""A realistic bad day: good and broken files from two inboxes through `ecg-intake run --once`.

Every input must end in the archive with results or in quarantine with its reason; counts add up.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy import create_engine, text

from model_training.synth.samples import write_samples
from tests.helpers.cli import Cli
from tests.helpers.inputs import (
    copy_local_dicom,
    encrypted_pdf,
    exif_rotated_jpeg,
    pixel_bomb_png,
    reference_page,
    tiff_pages,
    vector_pdf,
)
from worker.settings import embedded_database_url

GOOD_PAGES = {"ecg-scan.png": 1, "ecg-photo.jpg": 1, "ecg-report.pdf": 2, "ecg-waveform.dcm": 1, "vector.pdf": 1,
              "scan.tif": 2, "rotated.jpg": 1, "scan.bmp": 1, "capture.dcm": 1}
BAD = {"bad-random-bytes.pdf": "unsupported_type", "empty.pdf": "empty", "cut-off.pdf": "truncated",
       "locked.pdf": "encrypted", "ct-scan.dcm": "not_ecg", "DICOMDIR": "not_ecg", "notes.pdf": "unsupported_type",
       "cut-off.png": "truncated", "bomb.png": "too_large", "six-pages.tif": "too_many_pages"}


def _write_batch(cardiology: Path, emergency: Path) -> None:
    import cv2

    write_samples(cardiology)  # four good files and bad-random-bytes.pdf
    batch = cardiology / "batch-2026-11-25"  # a sub-folder batch
    batch.mkdir()
    vector_pdf(batch / "vector.pdf")
    tiff_pages(batch / "scan.tif", pages=2, deep=True)
    exif_rotated_jpeg(emergency / "rotated.jpg")
    cv2.imwrite(str(emergency / "scan.bmp"), reference_page(1200))
    copy_local_dicom("SC_rgb_jpeg_dcmtk.dcm", emergency / "capture.dcm")

    (emergency / "empty.pdf").write_bytes(b"")
    data = (batch / "vector.pdf").read_bytes()
    (emergency / "cut-off.pdf").write_bytes(data[: len(data) * 2 // 3])
    encrypted_pdf(emergency / "locked.pdf", user_password="ward-7")
    copy_local_dicom("CT_small.dcm", emergency / "ct-scan.dcm")
    copy_local_dicom("DICOMDIR", emergency / "DICOMDIR")
    (emergency / "notes.pdf").write_text("call the cardiologist about bed 4\n")
    png = cv2.imencode(".png", reference_page(800))[1].tobytes()
    (emergency / "cut-off.png").write_bytes(png[: len(png) // 2])
    pixel_bomb_png(emergency / "bomb.png", side=6000)  # 36 MP, over the 20 MP limit set below
    tiff_pages(emergency / "six-pages.tif", pages=6)
    shutil.copy(batch / "vector.pdf", emergency / "same-as-vector.pdf")  # a duplicate: seen, not redone
    (emergency / "upload.pdf.part").write_bytes(b"%PDF-1.7 still copying")  # a temp file: never taken


def _files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()]


def test_mixed_batch_every_file_accounted_for(cli: Cli, home: Path, tmp_path: Path) -> None:
    cardiology, emergency = tmp_path / "cardiology", tmp_path / "er-drop"
    emergency.mkdir(parents=True)
    _write_batch(cardiology, emergency)
    inputs = _files(cardiology, emergency)
    assert len(inputs) == len(GOOD_PAGES) + len(BAD) + 2  # + the duplicate and the temp file

    cli.env.update({"ECG_INTAKE_MAX_PAGES": "4", "ECG_INTAKE_MAX_PAGE_MEGAPIXELS": "20"})
    result = cli("run", "--inbox", f"cardiology={cardiology}", "--inbox", f"emergency={emergency}", "--once")
    assert f"claimed {len(inputs) - 1} file(s)" in result.stderr

    rows = cli.results()
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(Path(row["path"]).name, []).append(row)
    assert set(by_file) == set(GOOD_PAGES) | set(BAD)
    for name, pages in GOOD_PAGES.items():
        assert [r["page"] for r in by_file[name]] == list(range(1, pages + 1)), name
        assert all(r["status"] == "done" and len(r["probabilities"]) == 5 for r in by_file[name]), name
    for name, reason in BAD.items():
        assert [(r["status"], r["reason"]) for r in by_file[name]] == [("quarantined", reason)], name

    archived = sorted(p.name.split("__", 1)[1] for p in (home / "archive").rglob("*") if p.is_file())
    assert archived == sorted([*GOOD_PAGES, "same-as-vector.pdf"])
    quarantined = {p.name.split("__", 1)[1]: p for p in (home / "quarantine").rglob("*") if p.is_file()}
    assert set(quarantined) == set(BAD) | {f"{name}.reason.json" for name in BAD}
    for name, reason in BAD.items():
        report = json.loads(quarantined[f"{name}.reason.json"].read_text())
        assert report["reason"] == reason and report["message"] and report["description"]
    assert [p.name for p in _files(cardiology, emergency)] == ["upload.pdf.part"]  # nothing else left, none lost

    engine = create_engine(embedded_database_url(home))
    with engine.connect() as conn:
        documents = conn.execute(text("select count(*) from documents")).scalar()
        predictions = conn.execute(text("select count(*) from predictions")).scalar()
        distinct = conn.execute(text("select count(distinct page_id) from predictions")).scalar()
        sources = dict(conn.execute(text("select source, count(*) from documents group by source")).all())
        sightings = conn.execute(text("select count(*) from events where action='duplicate_sighting'")).scalar()
    assert documents == len(GOOD_PAGES) + len(BAD)
    assert predictions == distinct == sum(GOOD_PAGES.values())  # exactly one per page
    assert sources == {"cardiology": 7, "emergency": 12}
    assert sightings == 1
