"""Query parameters -> `ResultFilter`: one definition shared by the JSON API and the HTML worklist, so both
validate the same way and the OpenAPI document describes what the pages accept too."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BeforeValidator, Field, StringConstraints

from model_training.manifest import LABELS
from worker.db.queries import ResultFilter

LabelName = Literal[LABELS]  # type: ignore[valid-type]
Status = Literal["processed", "quarantined", "reviewed", "unreviewed", "disagreement"]
MAX_OFFSET = 10**9  # far beyond any table, well inside every database's integer


def _blank_to_none(value: Any) -> Any:
    """An empty field of a submitted HTML form means 'no filter', not an invalid value."""
    return None if isinstance(value, str) and not value.strip() else value


Blank = BeforeValidator(_blank_to_none)  # before the constraints, which sit on the inner type so None passes
SafeText = Annotated[str, StringConstraints(max_length=128, pattern=r"^[^\x00]*$")]  # PostgreSQL refuses NUL
Text = Annotated[SafeText | None, Blank, Query()]
Probability = Annotated[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None, Blank, Query()]
Day = Annotated[date | None, Blank, Query(description="YYYY-MM-DD, by the date the file was received (UTC)")]


def _day_start(day: date | None) -> datetime | None:
    return datetime.combine(day, time.min, UTC) if day else None


def _day_end(day: date | None) -> datetime | None:
    return datetime.combine(day, time.max, UTC) if day else None


class Paging:
    """`limit` and `offset`, bounded so no value can overflow a database integer."""

    def __init__(self, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> None:
        self.limit, self.offset = limit, offset


def worklist_filters(
    label: Annotated[LabelName | None, Blank, Query(description="only pages whose model probability of this label "
                                                                "is above `above`")] = None,
    above: Probability = None,
    source: Text = None,
    since: Day = None,
    until: Day = None,
) -> ResultFilter:
    """The worklist's filters: label, probability above, source, date range."""
    return ResultFilter(label=label, above=above, source=source, since=_day_start(since), until=_day_end(until))


def result_filters(
    label: Annotated[LabelName | None, Blank, Query()] = None,
    above: Probability = None,
    below: Probability = None,
    source: Text = None,
    since: Day = None,
    until: Day = None,
    status: Annotated[Status | None, Blank, Query()] = None,
    patient: Annotated[SafeText | None, Blank, Query(description="patient id; reviewers and admins only")] = None,
) -> ResultFilter:
    """Every filter of `ResultFilter` the API offers on /api/results."""
    return ResultFilter(label=label, above=above, below=below, source=source, since=_day_start(since),
                        until=_day_end(until), status=status, patient=patient)


def query_string(filters: ResultFilter) -> dict[str, str]:
    """The filters back as URL parameters (dates as days), for paging and previous/next links."""
    params: dict[str, str] = {}
    for name in ("label", "above", "below", "source", "status", "patient"):
        value = getattr(filters, name, None)
        if value is not None:
            params[name] = str(value)
    for name in ("since", "until"):
        value = getattr(filters, name, None)
        if value is not None:
            params[name] = value.date().isoformat()
    return params
