"""Every query the worker, the CLI and the review API run, in one place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    cast,
    delete,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from ingest.reasons import Reason
from model_training.manifest import LABEL_NAME
from worker.db.models import (
    Document,
    DocumentStatus,
    Event,
    LoginFailure,
    ModelStatus,
    ModelVersion,
    Page,
    Prediction,
    Review,
    ReviewSession,
    User,
    Waveform,
    WaveformReading,
)


def document_by_sha(session: Session, sha256: str) -> Document | None:
    return session.scalar(select(Document).where(Document.sha256 == sha256))


def predicted_page_ids(session: Session, model_version_id: int, page_ids: Iterable[int]) -> set[int]:
    """Pages that already have this model's prediction: a redelivered classify task skips them."""
    return set(session.scalars(select(Prediction.page_id).where(
        Prediction.model_version_id == model_version_id, Prediction.page_id.in_(list(page_ids)))))


def model_version_named(session: Session, name: str) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.name == name))


def champion(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == ModelStatus.CHAMPION)
                          .order_by(ModelVersion.promoted_at.desc().nulls_last(), ModelVersion.id.desc()))


def model_versions(session: Session) -> list[ModelVersion]:
    """Newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc(),
                                                              ModelVersion.id.desc())))


def model_version_like(session: Session, key: str) -> ModelVersion | None:
    """By id, full name (`name@version`) or a unique version prefix (`@3f2a` or `3f2a`)."""
    if key.isdigit() and (row := session.get(ModelVersion, int(key))) is not None:
        return row
    if (row := model_version_named(session, key)) is not None:
        return row
    prefix = key.lstrip("@")
    found = list(session.scalars(select(ModelVersion).where(ModelVersion.name.like(f"%@{prefix}%")).limit(2)))
    return found[0] if len(found) == 1 else None


def previous_champion(session: Session, before: ModelVersion) -> ModelVersion | None:
    """The retired version promoted most recently before `before`: what a rollback restores."""
    return session.scalar(select(ModelVersion).where(
        ModelVersion.status == ModelStatus.RETIRED, ModelVersion.promoted_at.is_not(None),
        ModelVersion.id != before.id,
        *([ModelVersion.promoted_at < before.promoted_at] if before.promoted_at else []),
    ).order_by(ModelVersion.promoted_at.desc()))


@dataclass(frozen=True)
class ReviewedPage:
    page_id: int
    image_path: str
    document_sha256: str
    labels: list[str]
    reviewed_at: datetime
    preparation: str | None  # the key its stored image was made with


def reviewed_pages(session: Session) -> list[ReviewedPage]:
    """Every reviewed page with its newest review's labels (the `pages.review_id` the triggers keep)."""
    rows = session.execute(
        select(Page.id, Page.image_path, Document.sha256, Review.labels, Review.created_at, Page.preparation)
        .join(Review, Review.id == Page.review_id).join(Document, Document.id == Page.document_id)
        .order_by(Page.id))
    return [ReviewedPage(*row) for row in rows]


def reviews_since(session: Session, since: datetime | None) -> int:
    """Reviews written after `since` (all of them for None): what the nightly job has not learnt from yet."""
    query = select(func.count(Review.id))
    return session.scalar(query.where(Review.created_at > since) if since else query) or 0


def internal_errors_since(session: Session, since: datetime) -> list[str]:
    """sha256 of documents quarantined as internal_error since `since`."""
    return list(session.scalars(select(Document.sha256).where(
        Document.reason == Reason.INTERNAL_ERROR.value, Document.processed_at >= since)))


# The `page_results` view (migration 0002): one row per page with its newest prediction and review. Its
# probability columns cover the five findings it was made for; every other label is read from the prediction.
VIEW_LABELS = ("MI", "AF", "STTC", "CD", "HYP")
PAGE_RESULTS = Table(
    "page_results", MetaData(),  # its own metadata: a view, never created from the models
    *(Column(name, Integer) for name in ("document_id", "page_id", "page_no", "prediction_id", "review_id",
                                         "disagreement")),
    *(Column(name, String) for name in ("sha256", "path", "source", "status", "reason", "file_type", "patient_id",
                                        "accession_number", "image_path", "thumbnail_path", "model_version",
                                        "review_comment", "reviewer")),
    *(Column(name, DateTime(timezone=True)) for name in ("received_at", "processed_at", "predicted_at",
                                                          "reviewed_at")),
    *(Column(name, JSON) for name in ("model_labels", "review_labels")),
    *(Column(f"p_{label.lower()}", Float) for label in VIEW_LABELS),
)
RESULTS = PAGE_RESULTS.outerjoin(Prediction, Prediction.id == PAGE_RESULTS.c.prediction_id)
STATUS_FILTERS = ("processed", "quarantined", "reviewed", "unreviewed", "disagreement")
SORTS = ("received", "-received", "probability", "uncertainty", "urgency")


def day_start(day: date) -> datetime:
    """`since` for a whole day: its first moment, in UTC."""
    return datetime.combine(day, time.min, UTC)


def day_end(day: date) -> datetime:
    """`until` for a whole day: the start of the next (the bound is exclusive), so all of `day` counts."""
    return day_start(day + timedelta(days=1))


def last_day(until: datetime) -> date:
    """The day `day_end` was made from: what a form shows for an `until` bound."""
    return (until - timedelta(microseconds=1)).date()


@dataclass(frozen=True)
class ResultFilter:
    """What `results`, the export, the worklist and the API narrow pages by; None means no filter."""

    label: str | None = None  # the model found this label; with above/below, that label's probability
    above: float | None = None
    below: float | None = None
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    source: str | None = None
    status: str | None = None  # one of STATUS_FILTERS, or a document status
    patient: str | None = None  # patient ID or accession number
    sort: str | None = None  # one of SORTS; default: received
    labels: tuple[str, ...] = ()  # the serving model's: what `above`/`below` without a label and the sorts range over


def _probability(label: str, labels: tuple[str, ...]):
    if not LABEL_NAME.fullmatch(label) or (labels and label not in labels):
        raise ValueError(f"unknown label {label!r}; one of {', '.join(labels)}")
    if label in VIEW_LABELS:  # the view's column: PostgreSQL's worklist index covers it
        return PAGE_RESULTS.c[f"p_{label.lower()}"]
    return Prediction.probabilities[label].as_float()


def _labels(filters: ResultFilter) -> tuple[str, ...]:
    if not filters.labels:
        raise ValueError("this filter or sort ranges over every label: give the serving model's labels")
    return filters.labels


def _where(filters: ResultFilter) -> list:
    v = PAGE_RESULTS.c
    found: list = []
    if filters.label is not None:
        column = _probability(filters.label, filters.labels)
        if filters.above is None and filters.below is None:
            found.append(func.coalesce(cast(v.model_labels, String), "").like(f'%"{filters.label}"%'))
        if filters.above is not None:
            found.append(column >= filters.above)
        if filters.below is not None:
            found.append(column < filters.below)
    elif filters.above is not None or filters.below is not None:
        probabilities = [_probability(label, filters.labels) for label in _labels(filters)]
        if filters.above is not None:
            found.append(or_(*(p >= filters.above for p in probabilities)))
        if filters.below is not None:
            found.append(and_(*(p < filters.below for p in probabilities)))
    if filters.since is not None:
        found.append(v.received_at >= filters.since)
    if filters.until is not None:
        found.append(v.received_at < filters.until)
    if filters.source is not None:
        found.append(v.source == filters.source)
    if filters.patient is not None:
        found.append(or_(v.patient_id == filters.patient, v.accession_number == filters.patient))
    status = filters.status
    if status == "processed":
        found.append(v.status == "done")
    elif status == "reviewed":
        found.append(v.review_id.is_not(None))
    elif status == "unreviewed":
        found.extend([v.review_id.is_(None), v.prediction_id.is_not(None)])
    elif status == "disagreement":
        found.append(v.disagreement == 1)
    elif status is not None:
        found.append(v.status == status)
    return found


def _uncertainty(filters: ResultFilter, dialect: str):
    """The distance of the most uncertain label from 0.5: small first."""
    distances = [func.abs(_probability(label, filters.labels) - 0.5) for label in _labels(filters)]
    if len(distances) == 1:
        return distances[0]
    return func.least(*distances) if dialect == "postgresql" else func.min(*distances)


def _order(filters: ResultFilter, dialect: str) -> list:
    v = PAGE_RESULTS.c
    sort = filters.sort or "received"
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")
    if sort == "-received":
        keys = [v.received_at.desc(), v.document_id.desc()]
    elif sort == "probability":
        keys = [_probability(filters.label or _labels(filters)[0], filters.labels).desc().nulls_last()]
    elif sort == "uncertainty":
        keys = [_uncertainty(filters, dialect).asc().nulls_last()]
    elif sort == "urgency":  # the order the worklist's cursor follows, tie-breaks included
        return [(column.desc() if descending else column.asc()).nulls_last()
                for column, descending in _urgency_keys(filters, dialect)]
    else:
        keys = [v.received_at, v.document_id]
    return [*keys, v.document_id, v.page_no, v.page_id]  # a stable order: paging never repeats or skips


def row_labels(rows: Iterable[dict[str, Any]], first: Sequence[str]) -> list[str]:
    """`first` (the serving model's labels), then every other label a row was read with: one column each when
    rows are shown or exported, so a page keeps the labels of the model that read it."""
    return list(dict.fromkeys([*first, *(label for row in rows for label in row.get("probabilities", {}))]))


def label_orders(session: Session, model_versions: Iterable[str]) -> dict[str, list[str]]:
    """Each named model version's labels in its manifest's order: the order its probabilities are shown in."""
    names = sorted(set(model_versions) - {None})
    if not names:
        return {}
    found = session.execute(select(ModelVersion.name, ModelVersion.manifest).where(ModelVersion.name.in_(names)))
    return {name: list((manifest or {}).get("labels") or []) for name, manifest in found}


def _rows(session: Session, mappings: list[Any]) -> list[dict[str, Any]]:
    orders = label_orders(session, (mapping["model_version"] for mapping in mappings))
    return [_row(mapping, orders.get(mapping["model_version"], [])) for mapping in mappings]


def _row(mapping: Any, order: list[str]) -> dict[str, Any]:
    row = {key: value for key, value in mapping.items() if not key.startswith("p_") and key != "model_probabilities"}
    stored = mapping["model_probabilities"] or {}
    row["probabilities"] = {label: stored[label] for label in dict.fromkeys([*order, *stored])
                            if stored.get(label) is not None}
    row["model_labels"] = list(row["model_labels"] or [])
    row["review_labels"] = None if row["review_labels"] is None else list(row["review_labels"])
    row["disagreement"] = None if row["disagreement"] is None else bool(row["disagreement"])
    return row


def page_results(session: Session, filters: ResultFilter = ResultFilter(), limit: int | None = None,
                 offset: int = 0) -> list[dict[str, Any]]:
    """Rows of the `page_results` view that pass `filters`, in their sort order."""
    query = (_results().where(*_where(filters))
             .order_by(*_order(filters, session.get_bind().dialect.name)).offset(offset))
    if limit is not None:
        query = query.limit(limit)
    return _rows(session, list(session.execute(query).mappings()))


def _results():
    """The view's rows with each page's newest prediction's probabilities, whatever labels its model has."""
    return select(PAGE_RESULTS, Prediction.probabilities.label("model_probabilities")).select_from(RESULTS)


def count_page_results(session: Session, filters: ResultFilter = ResultFilter()) -> int:
    if replace(filters, sort=None, labels=()) == ResultFilter(status="unreviewed"):  # the worklist's total: pages alone
        return session.scalar(select(func.count()).select_from(Page).where(
            Page.prediction_id.is_not(None), Page.review_id.is_(None))) or 0
    return session.scalar(select(func.count()).select_from(RESULTS).where(*_where(filters))) or 0


def worklist(session: Session, filters: ResultFilter, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """Unreviewed pages with a prediction, most urgent first."""
    return page_results(session, replace(filters, status="unreviewed", sort=filters.sort or "urgency"), limit, offset)


WorklistKey = tuple[float | None, float | None, int, int, int]  # p_mi, uncertainty, document_id, page_no, page_id


def worklist_after(session: Session, filters: ResultFilter, limit: int, after: WorklistKey | None = None,
                   offset: int = 0) -> tuple[list[dict[str, Any]], list[WorklistKey]]:
    """The worklist's next `limit` rows after the row whose sort key is `after` (keyset paging: a deep page
    costs what the first does, where OFFSET reads every row before it), past `offset` more, and each row's
    sort key. The urgency order only: the one sort whose key the worklist carries."""
    filters = replace(filters, status="unreviewed", sort=filters.sort or "urgency")
    if filters.sort != "urgency":
        raise ValueError("a worklist cursor follows the urgency order only")
    dialect = session.get_bind().dialect.name
    keys = _urgency_keys(filters, dialect)
    query = _results().add_columns(keys[1][0].label("worklist_uncertainty")).where(*_where(filters))
    if after is not None:
        query = query.where(_after(keys, after))
    found = _keyset_rows(session, query.order_by(*_order(filters, dialect)), keys[0][0], after, limit, offset)
    sort_keys = [(m["p_mi"], m["worklist_uncertainty"], m["document_id"], m["page_no"], m["page_id"]) for m in found]
    rows = _rows(session, found)
    for row in rows:
        row.pop("worklist_uncertainty")
    return rows, sort_keys


def _keyset_rows(session: Session, query: Any, first: Any, after: WorklistKey | None, limit: int,
                 offset: int) -> list[Any]:
    """The rows of `query` (already past `after`): the bound on the first key alone (`p_mi <= v`) is what
    PostgreSQL's MI index starts its scan at, where the whole OR-ed predicate is a filter over every row
    before it. Rows without an MI probability, last in the order, are read apart when that range runs out."""
    if after is None or after[0] is None:
        return list(session.execute(query.limit(limit).offset(offset)).mappings())
    wanted = limit + offset
    found = list(session.execute(query.where(first <= after[0]).limit(wanted)).mappings())
    if len(found) < wanted:
        found += session.execute(query.where(first.is_(None)).limit(wanted - len(found))).mappings()
    return found[offset:]


def _urgency_keys(filters: ResultFilter, dialect: str) -> list[tuple[Any, bool]]:
    """The urgency order as (expression, descending), each nulls last: likely infarction first (when the
    model reads it), then the pages the model is least sure of, then a stable tie-break. `_order` sorts by
    it and `_after` pages through it, so the two cannot drift apart."""
    v = PAGE_RESULTS.c
    return [(v.p_mi, True), (_uncertainty(filters, dialect), False), (v.document_id, False), (v.page_no, False),
            (v.page_id, False)]


def _after(keys: list[tuple[Any, bool]], values: Sequence[Any]) -> Any:
    """Rows strictly after `values` in the order of `keys` (nulls last): the lexicographic 'greater than'."""
    alternatives, equal = [], []
    for (column, descending), value in zip(keys, values, strict=True):
        if value is None:  # nulls come last: only another NULL ties, nothing is beyond
            equal.append(column.is_(None))
            continue
        beyond = column < value if descending else column > value
        alternatives.append(and_(*equal, or_(beyond, column.is_(None))))
        equal.append(column == value)
    return or_(*alternatives) if alternatives else false()


def page_result(session: Session, page_id: int) -> dict[str, Any] | None:
    found = session.execute(_results().where(PAGE_RESULTS.c.page_id == page_id)).mappings().first()
    return _rows(session, [found])[0] if found is not None else None


def source_metadata(session: Session, document_id: int) -> dict[str, Any]:
    """What the decoder read from a document besides its pixels; identifiers included, so callers filter."""
    return session.scalar(select(Document.source_metadata).where(Document.id == document_id)) or {}


# Users, reviews and audit (review UI)


def user_named(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def all_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def add_user(session: Session, name: str, password_hash: str, role: str) -> User:
    user = User(name=name, password_hash=password_hash, role=role, disabled=False)
    session.add(user)
    session.flush()
    return user


def add_review(session: Session, page_id: int, reviewer_id: int, labels: list[str], comment: str | None) -> Review:
    """A new review row; earlier reviews of the page stay, the newest one counts."""
    review = Review(page_id=page_id, reviewer_id=reviewer_id, labels=labels, comment=comment)
    session.add(review)
    session.flush()
    return review


def record_event(session: Session, actor: str, action: str, document_id: int | None = None,
                 page_id: int | None = None, details: dict[str, Any] | None = None) -> Event:
    """One audit row: who saw or changed what."""
    event = Event(actor=actor, action=action, document_id=document_id, page_id=page_id, details=details or {})
    session.add(event)
    session.flush()
    return event


# Review sessions and failed logins (review UI)


def add_review_session(session: Session, key: str, user_id: int, now: datetime) -> ReviewSession:
    row = ReviewSession(id=key, user_id=user_id, created_at=now, last_seen_at=now)
    session.add(row)
    session.flush()
    return row


def delete_review_sessions_before(session: Session, created_before: datetime) -> None:
    session.execute(delete(ReviewSession).where(ReviewSession.created_at < created_before))


def review_session(session: Session, key: str) -> ReviewSession | None:
    return session.get(ReviewSession, key)


def revoke_review_sessions(session: Session, now: datetime, key: str | None = None,
                           user_id: int | None = None) -> int:
    """End the open session `key`, or every open session of `user_id`; returns how many ended."""
    where = [ReviewSession.revoked_at.is_(None)]
    where += [ReviewSession.id == key] if key is not None else []
    where += [ReviewSession.user_id == user_id] if user_id is not None else []
    if len(where) == 1:
        raise ValueError("name a session or a user")
    return session.execute(update(ReviewSession).where(*where).values(revoked_at=now)).rowcount


def login_failure_times(session: Session, key: str, since: datetime, limit: int) -> list[datetime]:
    """The newest `limit` failures under `key` since `since`, newest first."""
    return list(session.scalars(select(LoginFailure.at).where(LoginFailure.key == key, LoginFailure.at >= since)
                                .order_by(LoginFailure.at.desc()).limit(limit)))


def add_login_failures(session: Session, keys: Iterable[str], at: datetime) -> None:
    session.add_all([LoginFailure(key=key, at=at) for key in keys])
    session.flush()


def forget_login_failures(session: Session, key: str) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.key == key))


def prune_login_failures(session: Session, before: datetime) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.at < before))


def read_page_ids(session: Session, page_ids: Iterable[int]) -> set[int]:
    """Pages whose waveform is stored already: a second digitise run skips them."""
    return set(session.scalars(select(WaveformReading.page_id).where(WaveformReading.page_id.in_(list(page_ids)))))


def waveform_reading(session: Session, page_id: int) -> WaveformReading | None:
    return session.scalar(select(WaveformReading).where(WaveformReading.page_id == page_id))


def page_waveforms(session: Session, page_id: int) -> list[Waveform]:
    """The page's stored leads, in the order they were stored (the standard order)."""
    return list(session.scalars(select(Waveform).where(Waveform.page_id == page_id).order_by(Waveform.id)))


def unread_pages_since(session: Session, since: datetime) -> int:
    """Pages of documents done since `since` whose waveform is not stored yet (`run --once` waits for them)."""
    return session.scalar(select(func.count()).select_from(Page).join(Document).outerjoin(
        WaveformReading, WaveformReading.page_id == Page.id).where(
        Document.status == DocumentStatus.DONE, Document.processed_at >= since, WaveformReading.id.is_(None)))
