"""Each stored prediction is the engine's answer for that very page.

Documents of different hearts (one a three-page PDF) go through the real pipeline (`ecg-intake run --once`),
whose classify step stacks a document's pages into one forward pass and may batch documents together. Then
the same engine, loaded on the same bundle here, classifies each page's saved model input alone; every stored
probability vector must match its own page's to 1e-4. A row mix-up in batching, or pages stored in the wrong
order, gives a page another page's vector and fails.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.helpers.cli import Cli
from tests.helpers.intake import ecg_pdf, ecg_png, intake_settings
from worker.db.models import Document, Page, Prediction
from worker.engine import load_engine


def _stored(url: str) -> list[tuple[str, int, str, dict[str, float], str]]:
    """(document path, page number, saved model input, stored probabilities, engine) for every page."""
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return list(session.execute(
                select(Document.path, Page.page_no, Page.image_path, Prediction.probabilities, Prediction.engine)
                .join(Page, Page.document_id == Document.id).join(Prediction, Prediction.page_id == Page.id)
                .order_by(Document.path, Page.page_no)).tuples())
    finally:
        engine.dispose()


def test_every_stored_probability_vector_is_the_engines_output_for_its_own_page(
        cli: Cli, home: Path, bundle_dir: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    ecg_pdf(inbox / "three-pages.pdf", [61, 62, 63])
    for seed in (64, 65, 66):
        ecg_png(inbox / f"scan-{seed}.png", seed)
    cli.env["ECG_INTAKE_BATCH_SIZE"] = "4"  # the PDF's 3 pages plus a scan can share one pass
    cli("run", "--once", "--inbox", str(inbox))

    rows = _stored(intake_settings(home, bundle_dir).sqlalchemy_url)
    assert [(Path(path).name, page_no) for path, page_no, *_ in rows] == [
        ("scan-64.png", 1), ("scan-65.png", 1), ("scan-66.png", 1),
        ("three-pages.pdf", 1), ("three-pages.pdf", 2), ("three-pages.pdf", 3)]
    (kind,) = {engine_name for *_, engine_name in rows}
    engine = load_engine(bundle_dir, kind, threads=2, batch_size=1, cache_dir=bundle_dir.parent / "engine-cache")
    labels = list(engine.manifest.labels)

    stored = np.array([[probabilities[label] for label in labels] for *_, probabilities, _ in rows])
    alone = np.concatenate([engine.predict(cv2.imread(image_path, cv2.IMREAD_GRAYSCALE)[None])
                            for _, _, image_path, _, _ in rows])
    # the pages are different hearts: a vector given to the wrong page could not pass for its own
    for i, j in combinations(range(len(rows)), 2):
        assert np.abs(alone[i] - alone[j]).max() > 1e-3, (rows[i][:2], rows[j][:2])
    for (path, page_no, *_), mine, expected in zip(rows, stored, alone, strict=True):
        np.testing.assert_allclose(mine, expected, atol=1e-4, err_msg=f"{Path(path).name} page {page_no}")
