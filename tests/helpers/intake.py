"""Direct intake for the tests: a data home with its database, distinct ECG pages, claimed files, stored rows.

These call the product's own functions (`worker.intake.intake`, `ingest.watch.claim`) in the test's process,
so a race or a fault can be staged without the watcher and the queue in between.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from ingest.watch import Claim, Inbox, claim
from worker.db.migrate import upgrade
from worker.db.models import Document, Event, Page, Prediction
from worker.settings import Settings


def intake_settings(home: Path, bundle_dir: Path) -> Settings:
    """Settings for the data home the `cli` fixture uses (same home, bundle and engine cache), its database
    migrated; explicit values, so no ECG_INTAKE_* of the test runner's environment leaks in."""
    settings = Settings(home=home, bundle=bundle_dir, database_url=None, broker_url=None,
                        engine_cache=bundle_dir.parent / "engine-cache", decode_isolation=False)
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    return settings


@functools.lru_cache(maxsize=16)
def ecg_page(seed: int) -> np.ndarray:
    """A scanned-looking 12-lead page (BGR) of synthetic record `seed`: different seeds, different hearts."""
    from model_training.synth.paper import render_page
    from model_training.synth.signals import generate_record

    image, _ = render_page(generate_record(seed), seed, "light", dpi=100)
    return image


def ecg_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), ecg_page(seed))
    return path


def ecg_pdf(path: Path, seeds: list[int]) -> Path:
    """A multi-page PDF of raster scans, one distinct page per seed, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(cv2.cvtColor(ecg_page(seed), cv2.COLOR_BGR2RGB)) for seed in seeds]
    images[0].save(path, format="PDF", save_all=True, append_images=images[1:], resolution=100)
    return path


def drop_and_claim(source: Path, inbox: Path, name: str | None = None) -> Claim:
    """Copy `source` into `inbox` and claim it as the watcher does (the atomic rename into `.claimed/`)."""
    inbox.mkdir(parents=True, exist_ok=True)
    dropped = inbox / (name or source.name)
    shutil.copyfile(source, dropped)
    taken = claim(dropped, Inbox(inbox))
    assert taken is not None
    return taken


def stored(url: str) -> dict[str, list]:
    """Documents, pages, predictions and events as plain tuples, straight from the tables."""
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return {
                "documents": [(d.sha256, d.status, d.reason) for d in session.scalars(select(Document))],
                "pages": [(p.document_id, p.page_no, p.image_path) for p in session.scalars(select(Page))],
                "predictions": list(session.scalars(select(Prediction.id))),
                "events": [e.action for e in session.scalars(select(Event).order_by(Event.id))],
            }
    finally:
        engine.dispose()
