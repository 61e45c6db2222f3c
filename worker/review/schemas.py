"""The JSON API's shapes: they document the API in OpenAPI and whitelist what leaves the server.

A row reaches a client only through `ResultRow`: file-system paths of stored images never do, and the
patient identifiers, review comments and reviewer names only when the caller may see them (for a viewer the
keys are absent, not null).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from model_training.manifest import LABEL_NAME
from worker.review.auth import SessionUser

LabelName = Annotated[str, StringConstraints(pattern=f"^{LABEL_NAME.pattern}$")]

# The file name a scanner wrote often names the patient; a free-text comment can hold any identifier, and who
# reviewed a page is a colleague's name: viewers see none of them.
IDENTIFYING = ("patient_id", "accession_number", "path", "review_comment", "reviewer")


class ResultRow(BaseModel):
    document_id: int
    sha256: str
    source: str | None = None
    status: str | None = None
    reason: str | None = None
    file_type: str | None = None
    received_at: datetime | None = None
    processed_at: datetime | None = None
    path: str | None = Field(None, description="where the file was dropped; reviewers and admins only")
    patient_id: str | None = Field(None, description="reviewers and admins only")
    accession_number: str | None = Field(None, description="reviewers and admins only")
    page_id: int | None = None
    page_no: int | None = None
    prediction_id: int | None = None
    model_version: str | None = None
    predicted_at: datetime | None = None
    model_labels: list[str] = Field(default_factory=list)
    probabilities: dict[str, float] = Field(default_factory=dict)
    review_id: int | None = None
    review_labels: list[str] | None = None
    review_comment: str | None = Field(None, description="reviewers and admins only")
    reviewer: str | None = Field(None, description="reviewers and admins only")
    reviewed_at: datetime | None = None
    disagreement: bool | None = None


class ResultPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ResultRow]
    next: str | None = Field(None, description="the worklist only: pass it as `after` for the next page; "
                                               "null on the last page")


# The device's measurements as vendor ECG XML stores them (ingest/decode/vendor_xml.py): key -> (name, unit).
DEVICE_MEASUREMENTS = {"heart_rate_bpm": ("Heart rate", "bpm"), "rr_ms": ("RR", "ms"), "pr_ms": ("PR", "ms"),
                       "qrs_ms": ("QRS", "ms"), "qt_ms": ("QT", "ms"), "qtc_ms": ("QTc", "ms"),
                       "p_axis_deg": ("P axis", "°"), "qrs_axis_deg": ("QRS axis", "°"), "t_axis_deg": ("T axis", "°")}


class DeviceReading(BaseModel):
    """What the cart or ECG management system measured and said, shown beside the model's answer."""

    format: str = Field(description="the file format it came in, e.g. ge-muse, philips-xml, hl7-aecg")
    measurements: dict[str, float] = Field(description="any of " + ", ".join(DEVICE_MEASUREMENTS))
    statements: list[str] = Field(description="the device's interpretation statements, in its order")
    derived_leads: list[str] = Field(description="leads the file did not store, computed from I and II")


def device_reading(metadata: dict[str, Any]) -> DeviceReading | None:
    """The device's reading from a document's stored metadata, without its identifiers; None where it has none."""
    if not metadata.get("vendor_format"):
        return None
    measurements = {key: float(value) for key, value in (metadata.get("vendor_measurements") or {}).items()
                    if key in DEVICE_MEASUREMENTS and isinstance(value, int | float)}
    return DeviceReading(format=str(metadata["vendor_format"]), measurements=measurements,
                         statements=[str(s) for s in metadata.get("vendor_statements") or []],
                         derived_leads=[str(s) for s in metadata.get("derived_leads") or []])


# The calipers' measurements on the page's own waveform (`waveform_readings`): key -> (name, unit).
WAVEFORM_MEASUREMENTS = {"heart_rate": ("Heart rate", "bpm"), "pr_ms": ("PR", "ms"), "qrs_ms": ("QRS", "ms"),
                         "qt_ms": ("QT", "ms"), "qtc_ms": ("QTc", "ms"), "axis_deg": ("QRS axis", "°")}


class WaveformSummary(BaseModel):
    """The page's 12 leads as stored: how they were got, how well each was read, what was measured on them."""

    method: str = Field(description='"source" (the file\'s own recording) or the digitiser that read the page')
    status: str = Field(description="source, read, no_layout or failed")
    message: str | None = Field(None, description="why the page was not read")
    layout: str | None = Field(None, description="the layout the leads were read in, e.g. 3x4")
    measurements: dict[str, float | None] = Field(description="any of " + ", ".join(WAVEFORM_MEASUREMENTS)
                                                  + "; null where the page did not allow it")
    leads: dict[str, str] = Field(description="lead -> quality: source, read (90 % or more of its drawn time), "
                                              "partial (50 % or more) or unread")


class PageDetail(BaseModel):
    page: ResultRow
    labels: list[str] = Field(description="the labels of the model that read the page (else the serving model's), "
                                          "in its order: the order of reviews and of the keys 1-9")
    thresholds: dict[str, float] = Field(description="the model's threshold per label (0.5 where none is stored)")
    images: dict[str, str] = Field(description="image kind -> URL: original (reviewers and admins), cleaned, gradcam, "
                                               "trace (the page with its leads read back; reviewers and admins)")
    device_reading: DeviceReading | None = Field(None, description="the recording device's own measurements and "
                                                                   "statements, where its file carried them")
    waveform: WaveformSummary | None = Field(None, description="the page's 12-lead waveform, once stored")


class ReviewIn(BaseModel):
    labels: list[LabelName] = Field(max_length=64, description="the findings present, from the page's `labels`; "
                                                               "[] for a normal ECG")
    comment: str | None = Field(None, max_length=4000)


class ReviewOut(BaseModel):
    review_id: int
    page_id: int
    reviewer: str
    labels: list[str]
    comment: str | None
    created_at: datetime


class Me(BaseModel):
    name: str
    role: str
    csrf_token: str = Field(description="send it as the X-CSRF-Token header on every POST")


def visible_row(row: dict[str, Any], user: SessionUser) -> ResultRow:
    """A query row as this user may see it; keys left out stay out of the JSON (exclude_unset)."""
    fields = {k: v for k, v in row.items() if k in ResultRow.model_fields}
    for key in IDENTIFYING:
        value = fields.pop(key, None)
        if user.sees_identifiers and value is not None:
            fields[key] = str(value)
    return ResultRow(**fields)
