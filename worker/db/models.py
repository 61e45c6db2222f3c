"""SQLAlchemy 2 models; the schema itself is made only by the Alembic migrations in `migrations/`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Made by migration 0002 on PostgreSQL only (an expression index SQLite does not need): not in the models.
POSTGRES_ONLY_INDEXES = frozenset({"ix_predictions_mi_probability"})


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JsonType, list[Any]: JsonType}


class DocumentStatus:
    """Where a document is in the flow; `done`, `quarantined` are final."""

    RECEIVED = "received"
    DECODED = "decoded"
    DONE = "done"
    QUARANTINED = "quarantined"
    FINAL = (DONE, QUARANTINED)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_received_at", "received_at"), Index("ix_documents_source", "source"))

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text, doc="where the file was dropped")
    current_path: Mapped[str] = mapped_column(Text, doc="where the original lies now: claimed, archive or quarantine")
    source: Mapped[str] = mapped_column(String(128), default="default")
    file_type: Mapped[str | None] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    source_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(32), index=True, default=DocumentStatus.RECEIVED)
    reason: Mapped[str | None] = mapped_column(String(64))
    reason_message: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    pages: Mapped[list[Page]] = relationship(back_populates="document", order_by="Page.page_no")


class Page(Base):
    __tablename__ = "pages"
    __table_args__ = (UniqueConstraint("document_id", "page_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    page_no: Mapped[int] = mapped_column(Integer)
    image_path: Mapped[str] = mapped_column(Text, doc="the preprocessed model input, PNG")
    prediction_id: Mapped[int | None] = mapped_column(Integer, index=True, doc="newest prediction (a trigger keeps it)")
    review_id: Mapped[int | None] = mapped_column(Integer, index=True, doc="newest review (a trigger keeps it)")
    thumbnail_path: Mapped[str | None] = mapped_column(Text)
    preprocess_version: Mapped[str] = mapped_column(String(32))
    preparation: Mapped[str | None] = mapped_column(String(255), doc="the key of the preparation the stored "
                                                    "model input was made with (`Preparation.key`)")
    source: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    document: Mapped[Document] = relationship(back_populates="pages")
    predictions: Mapped[list[Prediction]] = relationship(back_populates="page")


class ModelStatus:
    """A model version's standing: one champion serves; a rejected challenger keeps its numbers."""

    CANDIDATE = "candidate"
    CHAMPION = "champion"
    RETIRED = "retired"
    REJECTED = "rejected"


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, doc="manifest name@version")
    bundle_path: Mapped[str] = mapped_column(Text)
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ModelStatus.CANDIDATE, index=True,
                                        doc="candidate, champion, retired or rejected")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                         doc="when it last became champion")


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("page_id", "model_version_id"),
                      Index("ix_predictions_page_id_created_at", "page_id", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    probabilities: Mapped[dict[str, Any]] = mapped_column(doc="label -> probability")
    labels: Mapped[list[Any]] = mapped_column(doc="labels at or over the model's thresholds")
    engine: Mapped[str] = mapped_column(String(32))
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    page: Mapped[Page] = relationship(back_populates="predictions")
    model_version: Mapped[ModelVersion] = relationship()


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(32), default="reviewer")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewSession(Base):
    """One login to the review UI; the cookie carries the id, the row says whether it still stands."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, doc="sha256 (hex) of the cookie's session id")
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="logout, password change or "
                                                        "disabled account")


class LoginFailure(Base):
    """One failed review login under one throttle key (name, address or both); pruned once out of the window."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_page_id_created_at", "page_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    labels: Mapped[list[Any]] = mapped_column()
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Event(Base):
    """Audit log: who saw or changed what, and what happened to each file (duplicate sightings too)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128), default="system")
    action: Mapped[str] = mapped_column(String(64), index=True)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id", ondelete="SET NULL"), index=True)
    page_id: Mapped[int | None] = mapped_column(ForeignKey("pages.id", ondelete="SET NULL"), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class JobLock(Base):
    """One row per exclusive job while it runs; an expired row belongs to a job that died."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Waveform(Base):
    """One lead of one page as signals: the waveform file's own samples ("source"), or the lead read back from
    the drawn page by the digitiser named in `method`. `samples` are float32 little-endian mV at `fs`, NaN where
    the page did not show the lead or it could not be read; `quality` is `model_training.digitise.quality`'s."""

    __tablename__ = "waveforms"
    __table_args__ = (UniqueConstraint("page_id", "lead"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"), index=True)
    lead: Mapped[str] = mapped_column(String(8))
    method: Mapped[str] = mapped_column(String(32), doc='"source"; for a drawn page "learned" or "classical" '
                                        '("none": not read)')
    fs: Mapped[int] = mapped_column(Integer)
    samples: Mapped[bytes] = mapped_column(LargeBinary)
    read_share: Mapped[float] = mapped_column(Float, doc="share of the time the lead was drawn that was read")
    quality: Mapped[str] = mapped_column(String(16), doc="source, read, partial or unread")
    layout: Mapped[str | None] = mapped_column(String(16), doc="the page layout the lead was read in (3x4, ...)")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WaveformReading(Base):
    """One per page once its waveform is stored: how it was got, whether that worked, and the calipers'
    measurements on it (None where the page did not allow one).

    A table of its own rather than columns of `pages`: `pages` carries triggers that a SQLite batch copy would
    drop and is read by every worklist query, while this is written once, later, by the digitise task, and its
    presence is what makes that task idempotent."""

    __tablename__ = "waveform_readings"

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"), unique=True)
    method: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), doc="source, read, no_layout or failed")
    message: Mapped[str | None] = mapped_column(Text, doc="why a page was not read")
    layout: Mapped[str | None] = mapped_column(String(16))
    heart_rate: Mapped[float | None] = mapped_column(Float, doc="beats per minute")
    pr_ms: Mapped[float | None] = mapped_column(Float)
    qrs_ms: Mapped[float | None] = mapped_column(Float)
    qt_ms: Mapped[float | None] = mapped_column(Float)
    qtc_ms: Mapped[float | None] = mapped_column(Float, doc="Bazett")
    axis_deg: Mapped[float | None] = mapped_column(Float, doc="frontal QRS axis")
    beats: Mapped[int] = mapped_column(Integer, default=0)
    trace_path: Mapped[str | None] = mapped_column(Text, doc="the page with its leads drawn back, PNG")
    wfdb_path: Mapped[str | None] = mapped_column(Text, doc="the WFDB header beside the page images")
    seconds: Mapped[float] = mapped_column(Float, doc="what reading the page took")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
