"""Query parameters -> `ResultFilter`: one definition shared by the JSON API and the HTML worklist, so both
validate the same way and the OpenAPI document describes what the pages accept too."""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Query, Request
from pydantic import BeforeValidator, Field, StringConstraints

from model_training.manifest import BundleError
from worker.db.queries import STATUS_FILTERS, ResultFilter, WorklistKey, day_end, day_start, last_day
from worker.serving import serving_manifest

Status = Literal[STATUS_FILTERS]  # type: ignore[valid-type]
MAX_OFFSET = 10**9  # far beyond any table, well inside every database's integer


def _blank_to_none(value: Any) -> Any:
    """An empty field of a submitted HTML form means 'no filter', not an invalid value."""
    return None if isinstance(value, str) and not value.strip() else value


Blank = BeforeValidator(_blank_to_none)  # before the constraints, which sit on the inner type so None passes
SafeText = Annotated[str, StringConstraints(max_length=128, pattern=r"^[^\x00]*$")]  # PostgreSQL refuses NUL
Text = Annotated[SafeText | None, Blank, Query()]
Probability = Annotated[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None, Blank, Query()]
Day = Annotated[date | None, Blank, Query(description="YYYY-MM-DD, by the date the file was received (UTC)")]


def _since(day: date | None) -> datetime | None:
    return day_start(day) if day else None


def _until(day: date | None) -> datetime | None:
    return day_end(day) if day else None


def serving_labels(request: Request) -> tuple[str, ...]:
    """The serving model's labels: what the filters, the worklist's columns and new reviews offer."""
    try:
        return tuple(serving_manifest(request.app.state.settings).labels)
    except BundleError as exc:
        raise HTTPException(503, f"the serving model's bundle cannot be read: {exc}") from exc


Labels = Annotated[tuple[str, ...], Depends(serving_labels)]
LabelText = Annotated[SafeText | None, Blank, Query(description="a label of the serving model")]


def _label(label: str | None, labels: tuple[str, ...]) -> str | None:
    if label is not None and label not in labels:
        raise HTTPException(422, f"unknown label {label!r}; the serving model reads {', '.join(labels)}")
    return label


class Paging:
    """`limit` and `offset`, bounded so no value can overflow a database integer."""

    def __init__(self, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> None:
        self.limit, self.offset = limit, offset


MAX_ID = 2**31 - 1  # PostgreSQL's integer: a larger id in a cursor would be a database error, not a 422
CURSOR_DOC = ("the `next` of the previous page: the rows after its last row, in the same order (keyset paging, "
              "as fast at any depth; `offset` then skips further)")


def encode_cursor(key: WorklistKey) -> str:
    """A row's sort key as an opaque URL-safe token (JSON floats round-trip exactly)."""
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def _decoded(text: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        return None


def _is_score(value: Any) -> bool:
    return value is None or (isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value))


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def worklist_cursor(
    after: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]*$", description=CURSOR_DOC)] = None,
) -> WorklistKey | None:
    """`after` back to a sort key; a cursor that is not one this server made is a 422, never a query."""
    if not after:
        return None
    key = _decoded(after)
    if not (isinstance(key, list) and len(key) == 5 and all(map(_is_score, key[:2])) and all(map(_is_id, key[2:]))):
        raise HTTPException(422, "`after` is not a worklist cursor: pass the `next` of a worklist page")
    return (None if key[0] is None else float(key[0]), None if key[1] is None else float(key[1]), *key[2:])


def worklist_filters(
    labels: Labels,
    label: Annotated[SafeText | None, Blank, Query(description="only pages whose model probability of this label "
                                                               "is above `above`")] = None,
    above: Probability = None,
    source: Text = None,
    since: Day = None,
    until: Day = None,
) -> ResultFilter:
    """The worklist's filters: label, probability above, source, date range."""
    return ResultFilter(label=_label(label, labels), above=above, source=source, since=_since(since),
                        until=_until(until), labels=labels)


def result_filters(
    labels: Labels,
    label: LabelText = None,
    above: Probability = None,
    below: Probability = None,
    source: Text = None,
    since: Day = None,
    until: Day = None,
    status: Annotated[Status | None, Blank, Query()] = None,
    patient: Annotated[SafeText | None, Blank, Query(description="patient id; reviewers and admins only")] = None,
) -> ResultFilter:
    """Every filter of `ResultFilter` the API offers on /api/results."""
    return ResultFilter(label=_label(label, labels), above=above, below=below, source=source, since=_since(since),
                        until=_until(until), status=status, patient=patient, labels=labels)


def query_string(filters: ResultFilter) -> dict[str, str]:
    """The filters back as URL parameters (dates as days), for paging and previous/next links."""
    params: dict[str, str] = {}
    for name in ("label", "above", "below", "source", "status", "patient"):
        value = getattr(filters, name, None)
        if value is not None:
            params[name] = str(value)
    if filters.since is not None:
        params["since"] = filters.since.date().isoformat()
    if filters.until is not None:
        params["until"] = last_day(filters.until).isoformat()
    return params
