"""Query results as files: CSV, Parquet, and a FHIR Bundle of DiagnosticReports and Observations.

Builders only: each takes the rows `worker.db.queries.page_results` returns (one per page, or per document
without pages) and writes or returns the export. `ecg-intake results` and `ecg-intake export`
(worker/cli/service.py) choose the rows.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

# The columns before and after the probability columns (one per label, `p_<label>` as in the `page_results` view).
# `results --format csv`: what the command shows, without patient identifiers
RESULT_FIELDS = (("sha256", "path", "page", "source", "status", "reason", "received_at", "model_version"),
                 ("model_labels", "review_labels", "reviewer"))
# `export --format csv|parquet`: a table to hand on; a page is reviewed when `reviewer` is set
EXPORT_FIELDS = (("sha256", "path", "page", "source", "status", "reason", "file_type", "received_at",
                  "model_version", "predicted_at"),
                 ("model_labels", "review_labels", "reviewer", "reviewed_at", "disagreement", "patient_id",
                  "accession_number"))
Fields = tuple[tuple[str, ...], tuple[str, ...]]


def probability_column(label: str) -> str:
    return f"p_{label.lower()}"


def columns(labels: Sequence[str], fields: Fields = EXPORT_FIELDS) -> tuple[str, ...]:
    """The table's columns for these labels (`worker.db.queries.row_labels`: the serving model's, then any
    other a row was read with)."""
    before, after = fields
    return (*before, *(probability_column(label) for label in labels), *after)


def utc(moment: datetime | None) -> datetime | None:
    """A stored time in UTC; SQLite hands back naive times, which were written in UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    found = utc(moment)
    return found.isoformat() if found is not None else None


def result_record(row: dict[str, Any]) -> dict[str, Any]:
    """`ecg-intake results --format json`: one row in the shape scripts read (`page`, `labels` = the model's)."""
    return {"sha256": row["sha256"], "path": row["path"], "page": row["page_no"], "status": row["status"],
            "reason": row["reason"], "file_type": row["file_type"], "source": row["source"],
            "received_at": _iso(row["received_at"]), "model_version": row["model_version"],
            "probabilities": dict(row["probabilities"]), "labels": list(row["model_labels"]),
            "review_labels": row["review_labels"], "reviewer": row["reviewer"]}


def flat_row(row: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """A view row as one flat record of `columns(labels)`: a probability column per label, times in UTC."""
    flat = {name: row.get(name) for name in columns(labels)}
    flat["page"] = row["page_no"]
    for name in ("received_at", "predicted_at", "reviewed_at"):
        flat[name] = utc(row.get(name))
    for label in labels:
        flat[probability_column(label)] = row["probabilities"].get(label)
    return flat


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def write_csv(rows: Iterable[dict[str, Any]], handle: IO[str], labels: Sequence[str],
              fields: Fields = EXPORT_FIELDS) -> int:
    """One line per row; labels space-separated, empty cells for none. Returns the row count."""
    names = columns(labels, fields)
    writer = csv.writer(handle)
    writer.writerow(names)
    count = 0
    for row in rows:
        flat = flat_row(row, labels)
        writer.writerow([_cell(flat[name]) for name in names])
        count += 1
    return count


def parquet_schema(labels: Sequence[str]):
    import pyarrow as pa

    types = {"page": pa.int32(), "disagreement": pa.bool_(),
             **dict.fromkeys(("received_at", "predicted_at", "reviewed_at"), pa.timestamp("us", tz="UTC")),
             **dict.fromkeys(map(probability_column, labels), pa.float64()),
             **dict.fromkeys(("model_labels", "review_labels"), pa.list_(pa.string()))}
    return pa.schema([(name, types.get(name, pa.string())) for name in columns(labels)])


def write_parquet(rows: Iterable[dict[str, Any]], path: Path, labels: Sequence[str]) -> int:
    """`columns(labels)` as a Parquet file (labels as lists; `review_labels` null for an unreviewed page)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [flat_row(row, labels) for row in rows]
    pq.write_table(pa.Table.from_pylist(records, schema=parquet_schema(labels)), path)
    return len(records)


# FHIR. fhir.resources 8 builds R5 by default and no longer ships R4; R4B is the closest model it keeps, and
# every element used here (Bundle, DiagnosticReport, Observation, Device, Reference.identifier) is the same in R4.
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ECG_STUDY = {"system": LOINC, "code": "11524-6", "display": "EKG study"}
ELECTROCARDIAC = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "EC",
                  "display": "Electrocardiac (e.g., EKG, EEC, Holter)"}
PROCEDURE = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "procedure",
             "display": "Procedure"}
ACCESSION = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN", "display": "Accession ID"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
POSITIVE = {"system": INTERPRETATION, "code": "POS", "display": "Positive"}
NEGATIVE = {"system": INTERPRETATION, "code": "NEG", "display": "Negative"}
# The closest SNOMED CT concepts to the five PTB-XL superclasses, which are broader than any one concept:
# STTC and CD group several findings, HYP is mostly left ventricular hypertrophy. A label of another model
# is exported by its name alone (`_finding`).
FINDINGS = {
    "MI": {"system": SNOMED, "code": "22298006", "display": "Myocardial infarction"},
    "AF": {"system": SNOMED, "code": "49436004", "display": "Atrial fibrillation"},
    "STTC": {"system": SNOMED, "code": "428750005", "display": "Nonspecific ST-T abnormality on electrocardiogram"},
    "CD": {"system": SNOMED, "code": "44808001", "display": "Conduction disorder of the heart"},
    "HYP": {"system": SNOMED, "code": "55827005", "display": "Left ventricular hypertrophy"},
}
SHA256_SYSTEM = "urn:ecg-intake:sha256"  # the document key: sha256 of the original file's bytes
PAGE_SYSTEM = "urn:ecg-intake:observation"  # <sha256>/<page>/<label>
MODEL_ID = "model"


def _finding(label: str) -> dict[str, Any]:
    """A finding as a CodeableConcept: its SNOMED CT coding where one is known, its name always."""
    return {"coding": [FINDINGS[label]], "text": label} if label in FINDINGS else {"text": label}


def _urn(*parts: Any) -> str:
    """A stable fullUrl: the same page and prediction give the same id in every export."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'ecg-intake:' + ':'.join(map(str, parts)))}"


def _subject(row: dict[str, Any]) -> dict[str, Any] | None:
    """The patient by identifier only, and only when the file carried one."""
    return {"identifier": {"value": row["patient_id"]}} if row.get("patient_id") else None


def _device(model_version: str) -> dict[str, Any]:
    return {"resourceType": "Device", "id": MODEL_ID, "deviceName": [{"name": model_version, "type": "model-name"}],
            "version": [{"value": model_version}], "type": {"text": "ECG classification model (ecg-intake)"}}


def _observation(row: dict[str, Any], label: str, probability: float) -> dict[str, Any]:
    """One finding on one page: the model's probability, positive when the model's labels hold it.

    R4 allows no Device as an Observation's or DiagnosticReport's performer, so the model is the
    Observation's `device`: a contained Device named by the model version.
    """
    found = label in row["model_labels"]
    return {
        "resourceType": "Observation",
        "contained": [_device(row["model_version"])],
        "identifier": [{"system": PAGE_SYSTEM, "value": f"{row['sha256']}/{row['page_no']}/{label}"}],
        "status": "preliminary",  # the model's reading; a clinician reads every page
        "category": [{"coding": [PROCEDURE]}],
        "code": _finding(label),
        "subject": _subject(row),
        "issued": utc(row["predicted_at"]),
        "valueQuantity": {"value": probability, "unit": "probability", "system": "http://unitsofmeasure.org",
                          "code": "1"},
        "interpretation": [{"coding": [POSITIVE if found else NEGATIVE]}],
        "device": {"reference": f"#{MODEL_ID}", "display": row["model_version"]},
        "note": [{"text": f"page {row['page_no']}"}],
    }


def _report(pages: list[dict[str, Any]], results: list[str]) -> dict[str, Any]:
    """One document's DiagnosticReport: an EKG study whose results are its pages' Observations."""
    first = pages[0]
    identifiers = [{"system": SHA256_SYSTEM, "value": first["sha256"]}]
    if first.get("accession_number"):
        identifiers.append({"type": {"coding": [ACCESSION]}, "value": first["accession_number"]})
    positive = list(dict.fromkeys(label for page in pages for label in page["model_labels"]))
    summary = "; ".join(f"page {page['page_no']}: {', '.join(page['model_labels']) or 'no finding'}"
                        for page in pages)
    return {
        "resourceType": "DiagnosticReport",
        "identifier": identifiers,
        "status": "preliminary",
        "category": [{"coding": [ELECTROCARDIAC]}],
        "code": {"coding": [ECG_STUDY]},
        "subject": _subject(first),
        "issued": max(utc(page["predicted_at"]) for page in pages),
        "result": [{"reference": url} for url in results],
        "conclusion": f"Model {first['model_version']} (decision support, not reviewed): {summary}",
        "conclusionCode": [_finding(label) for label in positive] or None,
    }


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_none(item) for item in value]
    return value


def fhir_bundle(rows: Iterable[dict[str, Any]], timestamp: datetime | None = None):
    """A FHIR R4 Bundle of type collection, validated as it is built: per document one DiagnosticReport
    (LOINC 11524-6) and, per predicted page and finding, one Observation (SNOMED CT). Pages without a
    prediction and documents without pages (quarantined) are left out.

    Built with fhir.resources' R4B models: version 8 defaults to R5 and no longer ships R4, and R4B is the
    closest model it keeps; every element used here is the same in R4."""
    from fhir.resources.R4B.bundle import Bundle

    documents: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["prediction_id"] is not None:
            documents.setdefault(row["sha256"], []).append(row)
    entries: list[dict[str, Any]] = []
    for sha256, pages in documents.items():
        observations = [(_urn(sha256, page["page_no"], label, page["prediction_id"]),
                         _observation(page, label, page["probabilities"][label]))
                        for page in pages for label in page["probabilities"]]
        report = _report(pages, [url for url, _ in observations])
        entries.append({"fullUrl": _urn(sha256), "resource": report})
        entries += [{"fullUrl": url, "resource": observation} for url, observation in observations]
    return Bundle.model_validate(_drop_none({"resourceType": "Bundle", "type": "collection",
                                             "timestamp": timestamp or datetime.now(UTC), "entry": entries}))


def write_fhir(rows: Iterable[dict[str, Any]], path: Path) -> tuple[int, int]:
    """The Bundle as JSON; returns (reports, observations)."""
    bundle = fhir_bundle(rows)
    path.write_text(bundle.json(indent=2), encoding="utf-8")
    kinds = [entry.resource.get_resource_type() for entry in bundle.entry or []]
    return kinds.count("DiagnosticReport"), kinds.count("Observation")


def write_atomically(path: Path, write) -> Any:
    """`write(part)` into a sibling temporary file, renamed onto `path` only when it finished."""
    part = path.with_name(f".{path.name}.part")
    try:
        found = write(part)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return found
