"""`ecg-intake results` filters and `ecg-intake export` (CSV, Parquet, FHIR), through the installed entry point
on a real PostgreSQL database; the read-only role and the README's example SQL on the same database."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from model_training.manifest import LABELS
from tests.helpers.cli import Cli
from tests.helpers.servers import PostgresServer
from worker.db.migrate import upgrade
from worker.db.models import Document, ModelVersion, Page, Prediction, Review, User
from worker.db.session import session_scope
from worker.export import RESULT_FIELDS, columns

README = Path(__file__).resolve().parent.parent / "README.md"
MODEL = "ecg@test"
MIDNIGHT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)  # today, UTC
# name: (received, source, identifiers, pages as (MI, AF, HYP) probabilities, reviewer's labels or None)
DOCUMENTS = {
    "night-mi": (MIDNIGHT - timedelta(hours=2), "er", {"patient_id": "P1", "accession_number": "A1"},
                 [(0.93, 0.10, 0.10), (0.40, 0.70, 0.10)], None),
    "night-reviewed": (MIDNIGHT - timedelta(hours=1), "er", {"patient_id": "P2", "accession_number": "A2"},
                       [(0.90, 0.10, 0.10)], ["MI"]),
    "old-normal": (MIDNIGHT - timedelta(hours=30), "cardiology", {}, [(0.10, 0.10, 0.10)], ["HYP"]),
}
SNOMED = {"MI": "22298006", "AF": "49436004", "STTC": "428750005", "CD": "44808001", "HYP": "55827005"}


def _fill(url: str) -> None:
    upgrade(url)
    with session_scope(url) as session:
        model = ModelVersion(name=MODEL, bundle_path="-", status="champion")
        reviewer = User(name="dr-a", password_hash="-", role="reviewer")
        session.add_all([model, reviewer])
        session.flush()
        for index, (name, (received, source, identifiers, pages, review)) in enumerate(DOCUMENTS.items()):
            document = Document(sha256=f"{index:064d}", path=f"/in/{name}.pdf", current_path="-", source=source,
                                status="done", file_type="pdf", source_metadata=identifiers, received_at=received)
            session.add(document)
            session.flush()
            for page_no, (mi, af, hyp) in enumerate(pages, start=1):
                page = Page(document_id=document.id, page_no=page_no, image_path="-", preprocess_version="3")
                session.add(page)
                session.flush()
                scores = {"MI": mi, "AF": af, "STTC": 0.2, "CD": 0.2, "HYP": hyp}
                session.add(Prediction(page_id=page.id, model_version_id=model.id, probabilities=scores,
                                       labels=[label for label, p in scores.items() if p >= 0.5], engine="cpu",
                                       latency_ms=1, created_at=received + timedelta(minutes=5)))
                session.flush()
                if review is not None:
                    session.add(Review(page_id=page.id, reviewer_id=reviewer.id, labels=review))
        session.add(Document(sha256="f" * 64, path="/in/broken.pdf", current_path="-", source="er",
                             status="quarantined", reason="corrupt", received_at=MIDNIGHT - timedelta(hours=3)))


@pytest.fixture(scope="module")
def url(postgres_server: PostgresServer) -> str:
    """One filled database for the module: every test here only reads it."""
    found = postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    _fill(found)
    return found


@pytest.fixture
def run(cli: Cli, url: str) -> Cli:
    cli.env["ECG_INTAKE_DATABASE_URL"] = url
    return cli


def _names(rows: list[dict]) -> list[str]:
    return [f"{Path(row['path']).stem}:{row['page']}" for row in rows]


def _json(run: Cli, *filters: str) -> list[dict]:
    return json.loads(run("results", "--format", "json", *filters).stdout)


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def test_results_filters_in_json(run: Cli) -> None:
    everything = _json(run)
    assert _names(everything) == ["old-normal:1", "broken:None", "night-mi:1", "night-mi:2", "night-reviewed:1"]
    first = everything[2]
    assert {"sha256", "path", "page", "status", "reason", "model_version", "probabilities", "labels",
            "review_labels", "reviewer", "source", "received_at"} <= set(first)
    assert first["probabilities"]["MI"] == pytest.approx(0.93) and first["labels"] == ["MI"]
    assert first["model_version"] == MODEL and first["source"] == "er" and first["review_labels"] is None
    assert datetime.fromisoformat(first["received_at"]) == MIDNIGHT - timedelta(hours=2)
    assert everything[0]["review_labels"] == ["HYP"] and everything[0]["reviewer"] == "dr-a"
    assert everything[1]["labels"] == [] and everything[1]["reason"] == "corrupt"

    cases = {
        ("--label", "MI", "--above", "0.8"): ["night-mi:1", "night-reviewed:1"],
        ("--label", "af"): ["night-mi:2"],
        ("--label", "MI", "--below", "0.2"): ["old-normal:1"],
        ("--status", "unreviewed"): ["night-mi:1", "night-mi:2"],
        ("--status", "reviewed"): ["old-normal:1", "night-reviewed:1"],
        ("--status", "disagreement"): ["old-normal:1"],
        ("--status", "quarantined"): ["broken:None"],
        ("--status", "processed", "--source", "cardiology"): ["old-normal:1"],
        ("--patient", "A1"): ["night-mi:1", "night-mi:2"],
        ("--patient", "P2"): ["night-reviewed:1"],
        ("--since", _day(MIDNIGHT - timedelta(days=1)), "--source", "er"): ["broken:None", "night-mi:1",
                                                                            "night-mi:2", "night-reviewed:1"],
        # a date alone includes that whole day; a date-time without a zone is UTC, and `until` excludes it
        ("--until", _day(MIDNIGHT - timedelta(hours=30))): ["old-normal:1"],
        ("--until", (MIDNIGHT - timedelta(hours=2)).replace(tzinfo=None).isoformat()): ["old-normal:1",
                                                                                        "broken:None"],
        ("--since", (MIDNIGHT - timedelta(hours=2)).isoformat(), "--until", MIDNIGHT.isoformat()): [
            "night-mi:1", "night-mi:2", "night-reviewed:1"],
        ("--sort", "urgency", "--limit", "2"): ["night-mi:1", "night-reviewed:1"],
        ("--sort", "-received", "--limit", "1"): ["night-reviewed:1"],
        ("--sort", "probability", "--label", "AF", "--above", "0"): ["night-mi:2", "night-mi:1", "night-reviewed:1",
                                                                     "old-normal:1"],
    }
    for filters, expected in cases.items():
        assert _names(_json(run, *filters)) == expected, filters


def _stderr(result) -> str:
    """Typer's error panel as plain words."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())


def test_bad_filter_values_exit_2(run: Cli, tmp_path: Path) -> None:
    for args, says in [(("results", "--label", "XX"), "unknown label 'XX'"),
                       (("results", "--sort", "sideways"), "unknown sort 'sideways'"),
                       (("results", "--status", "maybe"), "unknown status 'maybe'"),
                       (("results", "--since", "yesterday"), "'yesterday' is not an ISO date"),
                       (("results", "--above", "2"), "--above"),
                       (("results", "--limit", "0"), "--limit"),
                       (("export", "--format", "xml", "--out", str(tmp_path / "x")), "unknown format 'xml'"),
                       (("export", "--format", "csv", "--out", str(tmp_path / "x"), "--until", "2026-13-01"),
                        "'2026-13-01' is not an ISO date")]:
        result = run(*args, check=False)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert says in _stderr(result), (args, result.stderr)
    assert not (tmp_path / "x").exists()


def test_csv_output_and_export(run: Cli, tmp_path: Path) -> None:
    shown = list(csv.DictReader(io.StringIO(run("results", "--format", "csv", "--status", "unreviewed").stdout)))
    assert list(shown[0]) == list(columns(LABELS, RESULT_FIELDS))  # the serving model's labels
    assert [(row["path"], row["page"], row["p_mi"], row["model_labels"]) for row in shown] == [
        ("/in/night-mi.pdf", "1", "0.93", "MI"), ("/in/night-mi.pdf", "2", "0.4", "AF")]
    assert "patient_id" not in shown[0]

    target = tmp_path / "out" / "results.csv"
    run("export", "--format", "csv", "--out", str(target), "--source", "er")
    rows = list(csv.DictReader(target.open(newline="")))
    assert list(rows[0]) == list(columns(LABELS))
    assert [f"{Path(row['path']).stem}:{row['page']}" for row in rows] == ["broken:", "night-mi:1", "night-mi:2",
                                                                           "night-reviewed:1"]
    assert rows[0]["reason"] == "corrupt" and rows[0]["p_mi"] == ""
    assert [float(rows[1][f"p_{label.lower()}"]) for label in LABELS] == [0.93, 0.10, 0.2, 0.2, 0.10]
    assert (rows[1]["patient_id"], rows[1]["accession_number"], rows[1]["reviewer"]) == ("P1", "A1", "")
    assert (rows[3]["review_labels"], rows[3]["reviewer"], rows[3]["disagreement"]) == ("MI", "dr-a", "False")
    assert not list(target.parent.glob(".*.part"))


def test_parquet_export(run: Cli, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    target = tmp_path / "mi.parquet"
    run("export", "--format", "parquet", "--out", str(target), "--label", "MI", "--above", "0.8")
    table = pq.read_table(target)
    assert table.column_names == list(columns(LABELS))
    rows = table.to_pylist()
    assert [(Path(row["path"]).stem, row["page"]) for row in rows] == [("night-mi", 1), ("night-reviewed", 1)]
    assert [row["p_mi"] for row in rows] == pytest.approx([0.93, 0.90])
    assert [row["review_labels"] for row in rows] == [None, ["MI"]]
    assert rows[0]["model_labels"] == ["MI"] and rows[0]["patient_id"] == "P1"
    assert rows[0]["received_at"] == MIDNIGHT - timedelta(hours=2)
    assert str(table.schema.field("received_at").type) == "timestamp[us, tz=UTC]"


def test_fhir_export_is_a_valid_r4_bundle(run: Cli, tmp_path: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle

    target = tmp_path / "results.fhir.json"
    run("export", "--format", "fhir", "--out", str(target))
    bundle = Bundle.model_validate_json(target.read_text())  # validates every resource again
    assert bundle.type == "collection"
    resources = {entry.fullUrl: entry.resource for entry in bundle.entry}
    reports = [r for r in resources.values() if r.get_resource_type() == "DiagnosticReport"]
    observations = [r for r in resources.values() if r.get_resource_type() == "Observation"]
    assert len(reports) == 3 and len(observations) == 4 * len(LABELS)  # the quarantined file has no report

    by_document = {next(i.value for i in r.identifier if i.system == "urn:ecg-intake:sha256"): r for r in reports}
    night = by_document[f"{0:064d}"]
    assert [(c.system, c.code) for c in night.code.coding] == [("http://loinc.org", "11524-6")]
    assert night.subject.identifier.value == "P1" and night.status == "preliminary"
    assert any(i.value == "A1" and i.type.coding[0].code == "ACSN" for i in night.identifier)
    assert [c.coding[0].code for c in night.conclusionCode] == [SNOMED["MI"], SNOMED["AF"]]
    assert by_document[f"{2:064d}"].subject is None  # no patient identifier in the file: no subject
    results = [resources[ref.reference] for ref in night.result]  # every reference resolves inside the bundle
    assert len(results) == 2 * len(LABELS)

    assert {o.code.coding[0].code for o in observations} == set(SNOMED.values())
    assert all(o.code.coding[0].system == "http://snomed.info/sct" for o in observations)
    found = {(o.identifier[0].value.rsplit("/", 2)[1], o.code.text): o for o in results}
    mi = found[("1", "MI")]
    assert float(mi.valueQuantity.value) == pytest.approx(0.93) and mi.valueQuantity.code == "1"
    assert mi.interpretation[0].coding[0].code == "POS" and found[("1", "AF")].interpretation[0].coding[0].code == "NEG"
    assert found[("2", "AF")].interpretation[0].coding[0].code == "POS"
    assert mi.subject.identifier.value == "P1"
    device = mi.contained[0]
    assert device.get_resource_type() == "Device" and mi.device.reference == f"#{device.id}"
    assert device.deviceName[0].name == MODEL and device.deviceName[0].type == "model-name"

    run("export", "--format", "fhir", "--out", str(target), "--status", "quarantined")
    assert not Bundle.model_validate_json(target.read_text()).entry


def _readme_sql() -> str:
    section = README.read_text(encoding="utf-8").split("## Query with SQL", 1)[1]
    return re.search(r"```sql\n(.*?)```", section, re.DOTALL).group(1)


def test_reader_role_and_the_readme_example(url: str) -> None:
    engine = create_engine(url)
    analyst = f"analyst_{uuid.uuid4().hex[:8]}"
    try:
        with engine.connect() as connection:
            transaction = connection.begin()  # rolled back: the analyst role never outlives the test
            connection.execute(text(f"CREATE ROLE {analyst} LOGIN"))
            connection.execute(text(f"GRANT ecg_intake_reader TO {analyst}"))  # as the README says
            connection.execute(text("SET TIME ZONE 'UTC'"))
            connection.execute(text("SET ROLE ecg_intake_reader"))
            assert connection.execute(text("SELECT count(*) FROM page_results")).scalar() == 5
            for statement in ("INSERT INTO documents (sha256, path, current_path) VALUES ('x', 'x', 'x')",
                              "SELECT count(*) FROM documents", "UPDATE pages SET page_no = 2"):
                savepoint = connection.begin_nested()
                with pytest.raises(ProgrammingError, match="permission denied"):
                    connection.execute(text(statement))
                savepoint.rollback()
            connection.execute(text(f"SET ROLE {analyst}"))
            found = connection.execute(text(_readme_sql())).mappings().all()
            assert [(row["path"], row["page_no"]) for row in found] == [("/in/night-mi.pdf", 1)]
            assert found[0]["p_mi"] == pytest.approx(0.93) and found[0]["model_labels"] == ["MI"]
            transaction.rollback()
    finally:
        engine.dispose()
