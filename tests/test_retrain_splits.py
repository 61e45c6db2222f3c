"""The nightly job's data, at the database level: what it trains on, validates on and holds out.

Real SQLite database, real champion registration (its `promoted_at`), real reviews before and after it, the
real split and the real labelled folders; no training (the end-to-end retraining test is slow and kept so).
Reviews from before the champion's promotion teach nothing new, the holdout never reaches training or
validation, and the validation share is what the trainer is handed to choose thresholds on.
"""

from __future__ import annotations

import csv
import hashlib
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np

from ingest.preprocess import PREPROCESS_VERSION
from model_training.manifest import load_manifest
from tests.helpers.intake import intake_settings
from worker.db.models import Document, Page, Review
from worker.db.queries import add_user, champion, reviewed_pages, reviews_since
from worker.db.session import session_scope
from worker.registry import champion_bundle
from worker.retrain import challenger_config, run_retrain, split_of, split_reviewed_pages
from worker.training_set import write_labelled_folder

HOLDOUT, VALIDATION = 20.0, 10.0
PER_PART = 3  # documents on each side of the split


def _documents() -> dict[str, list[str]]:
    """Document keys, PER_PART of each split, found by the split's own stable hash."""
    found: dict[str, list[str]] = {"train": [], "validation": [], "holdout": []}
    for i in range(10_000):
        sha = hashlib.sha256(f"document-{i}".encode()).hexdigest()
        part = split_of(sha, HOLDOUT, VALIDATION)
        if len(found[part]) < PER_PART:
            found[part].append(sha)
    assert all(len(shas) == PER_PART for shas in found.values()), found
    return found


def _labels_csv(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "labels.csv") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def test_splits_keep_old_reviews_out_of_training_the_holdout_out_of_both_and_validation_for_thresholds(
        home: Path, bundle_dir: Path, tmp_path: Path) -> None:
    settings = intake_settings(home, bundle_dir).model_copy(update={
        "retrain_holdout_percent": HOLDOUT, "retrain_validation_percent": VALIDATION,
        "retrain_min_reviews": 1000, "retrain_replay_pages": 16})
    url = settings.sqlalchemy_url
    champion_bundle(url, bundle_dir)  # the configured bundle becomes champion now: its promotion time
    manifest = load_manifest(bundle_dir)
    image = np.full((8, 8), 200, np.uint8)
    documents = _documents()
    old_pages, new_pages = {}, {}  # page id -> (part, labels)
    with session_scope(url) as session:
        promoted_at = champion(session).promoted_at
        reviewer = add_user(session, name="rita", password_hash="x", role="reviewer")
        for part, shas in documents.items():
            for n, sha in enumerate(shas):
                document = Document(sha256=sha, path=f"/in/{sha[:8]}.pdf", current_path=f"/archive/{sha[:8]}.pdf",
                                    status="done")
                session.add(document)
                session.flush()
                for page_no, (when, labels) in enumerate(
                        [(promoted_at - timedelta(days=1), ["MI"]),  # learnt by the champion already
                         (promoted_at + timedelta(minutes=1 + n), ["AF", "CD"])], start=1):
                    path = tmp_path / "pages" / f"{sha[:12]}-{page_no}.png"
                    path.parent.mkdir(exist_ok=True)
                    cv2.imwrite(str(path), image)
                    page = Page(document_id=document.id, page_no=page_no, image_path=str(path),
                                thumbnail_path=str(path), preparation=manifest.preparation.key,
                                preprocess_version=PREPROCESS_VERSION)
                    session.add(page)
                    session.flush()
                    session.add(Review(page_id=page.id, reviewer_id=reviewer.id, labels=labels, created_at=when))
                    (old_pages if page_no == 1 else new_pages)[page.id] = (part, labels)

    # the "since promotion" count, as the nightly job takes it from the champion row
    report = run_retrain(settings, actor="test")
    assert report["status"] == "skipped" and report["new_reviews"] == len(new_pages) == 3 * PER_PART

    with session_scope(url) as session:
        since = champion(session).promoted_at
        assert reviews_since(session, since) == len(new_pages)
        parts = split_reviewed_pages(settings, reviewed_pages(session), since)
    ids = {part: sorted(page.page_id for page in rows) for part, rows in parts.items()}
    everything = {**old_pages, **new_pages}
    assert ids["train"] == sorted(p for p, (part, _) in new_pages.items() if part == "train")  # no old review
    for part in ("validation", "holdout"):  # measuring sides keep every reviewed page of their documents
        assert ids[part] == sorted(p for p, (side, _) in everything.items() if side == part)
    assert not set(ids["holdout"]) & (set(ids["train"]) | set(ids["validation"]))

    work = settings.retrain_dir / "nightly-test"
    written = {part: write_labelled_folder(rows, work / part, manifest) for part, rows in parts.items()}
    assert written == {part: len(page_ids) for part, page_ids in ids.items()}
    folders = {part: _labels_csv(work / part) for part in parts}
    for part, rows in folders.items():  # page-00000042.png: the page id, and its newest review's labels
        assert sorted(int(name[5:13]) for name in rows) == ids[part]
        assert sorted(path.name for path in (work / part).glob("*.png")) == sorted(rows)
        for name, row in rows.items():
            labels = everything[int(name[5:13])][1]
            assert {label for label in manifest.labels if row[label] == "1"} == set(labels)

    config = challenger_config(settings, "nightly-test", bundle_dir, manifest, work, len(ids["train"]))
    assert [source.path for source in config.validation] == [work / "validation"]  # thresholds chosen here
    folder_sources = [source.path for source in config.data if source.kind == "folder"]
    assert folder_sources == [work / "train"]
    named = [str(source.path) for source in [*config.data, *config.validation] if source.path is not None]
    assert not any(path.startswith(str(work / "holdout")) for path in named)
