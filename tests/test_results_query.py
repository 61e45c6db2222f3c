"""The `page_results` view and its filters, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from model_training.manifest import LABELS
from worker.db.migrate import upgrade
from worker.db.models import Document, ModelVersion, Page, Prediction, Review, User
from worker.db.queries import ResultFilter, count_page_results, page_result, page_results, worklist, worklist_after
from worker.db.session import session_scope

DAY = datetime(2026, 11, 28, tzinfo=UTC)
PAGES = {  # name: (MI, AF, reviewer's labels or None, source, patient)
    "mi-high": (0.95, 0.10, None, "cardiology", "P1"),
    "mi-low": (0.05, 0.20, None, "er", "P2"),
    "af-unsure": (0.30, 0.52, None, "er", "P3"),
    "agreed": (0.90, 0.10, ["MI"], "cardiology", "P4"),
    "corrected": (0.90, 0.10, [], "cardiology", "P5"),
}


def _fill(url: str) -> None:
    upgrade(url)
    with session_scope(url) as session:
        old = ModelVersion(name="m@old", bundle_path="-", status="retired")
        new = ModelVersion(name="m@new", bundle_path="-", status="champion")
        reviewer = User(name="dr-a", password_hash="-", role="reviewer")
        session.add_all([old, new, reviewer])
        session.flush()
        for index, (name, (mi, af, reviewed, source, patient)) in enumerate(PAGES.items()):
            document = Document(sha256=f"{index:064d}", path=f"/in/{name}.pdf", current_path="-", source=source,
                                status="done", source_metadata={"patient_id": patient, "accession_number": f"A{index}"},
                                received_at=DAY + timedelta(hours=index))
            session.add(document)
            session.flush()
            page = Page(document_id=document.id, page_no=1, image_path="-", preprocess_version="3")
            session.add(page)
            session.flush()
            scores = {"MI": mi, "AF": af, "STTC": 0.1, "CD": 0.1, "HYP": 0.1}
            labels = [label for label, p in scores.items() if p >= 0.5]
            session.add(Prediction(page_id=page.id, model_version_id=old.id, probabilities={"MI": 0.0},
                                   labels=[], engine="cpu", latency_ms=1, created_at=DAY))
            session.add(Prediction(page_id=page.id, model_version_id=new.id, probabilities=scores, labels=labels,
                                   engine="cpu", latency_ms=1, created_at=DAY + timedelta(days=1)))
            if reviewed is not None:
                session.add(Review(page_id=page.id, reviewer_id=reviewer.id, labels=reviewed))
        session.add(Document(sha256="f" * 64, path="/in/broken.pdf", current_path="-", source="er",
                             status="quarantined", reason="corrupt", received_at=DAY + timedelta(hours=9)))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        found = f"sqlite:///{tmp_path / 'results.db'}"
    else:
        found = request.getfixturevalue("postgres_url")
    _fill(found)
    return found


def _names(rows: list[dict]) -> list[str]:
    return [Path(row["path"]).stem for row in rows]


def test_filters_sorting_and_paging(url: str) -> None:
    with session_scope(url) as session:
        everything = page_results(session)
        assert _names(everything) == [*PAGES, "broken"]
        assert {row["model_version"] for row in everything[:5]} == {"m@new"}  # the newest prediction only
        assert everything[0]["probabilities"]["MI"] == pytest.approx(0.95)
        assert everything[-1]["page_id"] is None and everything[-1]["reason"] == "corrupt"

        assert _names(page_results(session, ResultFilter(label="MI", above=0.8))) == ["mi-high", "agreed",
                                                                                     "corrected"]
        assert _names(page_results(session, ResultFilter(label="AF"))) == ["af-unsure"]
        assert _names(page_results(session, ResultFilter(status="reviewed"))) == ["agreed", "corrected"]
        assert _names(page_results(session, ResultFilter(status="disagreement"))) == ["corrected"]
        assert _names(page_results(session, ResultFilter(status="quarantined"))) == ["broken"]
        assert _names(page_results(session, ResultFilter(patient="P3"))) == ["af-unsure"]
        assert _names(page_results(session, ResultFilter(patient="A1"))) == ["mi-low"]
        assert _names(page_results(session, ResultFilter(source="er", since=DAY + timedelta(hours=2)))) == [
            "af-unsure", "broken"]
        assert _names(page_results(session, ResultFilter(sort="-received"), limit=2, offset=1)) == ["corrected",
                                                                                                   "agreed"]
        assert count_page_results(session, ResultFilter(status="unreviewed")) == 3
        assert _names(worklist(session, ResultFilter(labels=LABELS), limit=10)) == ["mi-high", "af-unsure", "mi-low"]
        assert _names(worklist(session, ResultFilter(labels=LABELS), limit=1, offset=1)) == ["af-unsure"]
        with pytest.raises(ValueError, match="serving model's labels"):  # no label set: no silent default
            worklist(session, ResultFilter(), limit=1)

        row = page_result(session, everything[4]["page_id"])
        assert row is not None and row["review_labels"] == [] and row["reviewer"] == "dr-a"
        assert row["disagreement"] is True and row["model_labels"] == ["MI"]


def test_a_model_with_other_labels_is_filtered_sorted_and_shown_in_its_order(url: str) -> None:
    """Labels come from the model that read the page: one the view has no column for is filtered and sorted
    through the prediction itself, and a row's probabilities keep its model's label order."""
    other = ("LVH", "MI")
    with session_scope(url) as session:
        model = ModelVersion(name="x@lvh", bundle_path="-", status="candidate", manifest={"labels": list(other)})
        session.add(model)
        session.flush()
        document = Document(sha256="e" * 64, path="/in/lvh.pdf", current_path="-", source="er", status="done",
                            received_at=DAY + timedelta(hours=12))
        session.add(document)
        session.flush()
        page = Page(document_id=document.id, page_no=1, image_path="-", preprocess_version="3")
        session.add(page)
        session.flush()
        session.add(Prediction(page_id=page.id, model_version_id=model.id, probabilities={"MI": 0.2, "LVH": 0.9},
                               labels=["LVH"], engine="cpu", latency_ms=1, created_at=DAY + timedelta(days=2)))
    with session_scope(url) as session:
        found = page_results(session, ResultFilter(label="LVH", above=0.5, labels=other))
        assert _names(found) == ["lvh"]
        assert list(found[0]["probabilities"]) == ["LVH", "MI"]
        assert _names(page_results(session, ResultFilter(label="LVH"))) == ["lvh"]  # found by the model's labels
        assert count_page_results(session, ResultFilter(label="LVH", below=0.5, labels=other)) == 0
        assert _names(worklist(session, ResultFilter(labels=other, sort="probability"), limit=1)) == ["lvh"]
        with pytest.raises(ValueError, match="unknown label"):
            page_results(session, ResultFilter(label="STTC", labels=other))


def test_filter_values_are_parameters_not_sql(url: str) -> None:
    hostile = "x' OR '1'='1'; DROP TABLE documents; --"
    with session_scope(url) as session:
        assert page_results(session, ResultFilter(source=hostile, patient=hostile)) == []
        assert count_page_results(session) == len(PAGES) + 1
        with pytest.raises(ValueError, match="unknown label"):
            page_results(session, ResultFilter(label=hostile))
        assert session.execute(text("select count(*) from documents")).scalar() == len(PAGES) + 1


def _add_ties(url: str) -> None:
    """Pages that tie on MI probability, on uncertainty, on both, and pages without an MI probability at all,
    several per document: what a cursor has to break by document, page number and page id."""
    with session_scope(url) as session:
        model = session.query(ModelVersion).filter_by(name="m@new").one()
        for index in range(12):
            document = Document(sha256=f"{index:064x}".replace("0", "c", 1), path=f"/in/tie-{index}.pdf",
                                current_path="-", source="er", status="done", received_at=DAY + timedelta(hours=20))
            session.add(document)
            session.flush()
            for page_no in range(1, 1 + index % 3 + 1):
                page = Page(document_id=document.id, page_no=page_no, image_path="-", preprocess_version="3")
                session.add(page)
                session.flush()
                scores = {"MI": [0.95, 0.5, 0.3][index % 3], "AF": [0.52, 0.48, 0.1][(index + page_no) % 3],
                          "STTC": 0.1, "CD": 0.1, "HYP": 0.1}
                if index % 4 == 3:
                    del scores["MI"]
                session.add(Prediction(page_id=page.id, model_version_id=model.id, probabilities=scores, labels=[],
                                       engine="cpu", latency_ms=1, created_at=DAY + timedelta(days=1)))


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_the_worklist_by_cursor_is_the_worklist_by_offset(url: str, limit: int) -> None:
    _add_ties(url)
    filters = ResultFilter(labels=LABELS)
    with session_scope(url) as session:
        expected = [row["page_id"] for row in worklist(session, filters, limit=1000)]
        walked, after = [], None
        while True:
            rows, keys = worklist_after(session, filters, limit, after)
            walked += [row["page_id"] for row in rows]
            if len(rows) < limit:
                break
            after = keys[-1]
        assert len(expected) == count_page_results(session, ResultFilter(status="unreviewed")) > 20
        assert walked == expected  # never a page twice, never one skipped, in the same order
        assert worklist_after(session, filters, 1, after=(None, None, 10**6, 1, 10**6))[0] == []
        assert "worklist_uncertainty" not in worklist_after(session, filters, 1)[0][0]
        with pytest.raises(ValueError, match="urgency"):
            worklist_after(session, ResultFilter(labels=LABELS, sort="received"), 1)
