"""The JSON API under /api/: results, the worklist, one page, its images, and reviews.

Every route needs a session; every response that shows data writes an audit event first.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from model_training.manifest import BundleError
from worker.db import queries
from worker.db.queries import ResultFilter, WorklistKey
from worker.review import records
from worker.review.auth import DB, SessionUser, csrf_token, current_user, require
from worker.review.filters import (
    Labels,
    Paging,
    encode_cursor,
    query_string,
    result_filters,
    worklist_cursor,
    worklist_filters,
)
from worker.review.schemas import Me, PageDetail, ResultPage, ReviewIn, ReviewOut, device_reading, visible_row

router = APIRouter(prefix="/api", tags=["api"])
PageId = Annotated[int, Path(ge=1, le=2**31 - 1)]
CSRF_DOC = {"parameters": [{"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
                            "description": "the session's token, from GET /api/me"}]}


@router.get("/me", response_model=Me)
def me(request: Request, user: SessionUser = Depends(current_user)) -> Me:
    """Who is logged in, and the CSRF token POSTs must carry in the X-CSRF-Token header."""
    return Me(name=user.name, role=user.role, csrf_token=csrf_token(request))


@router.get("/results", response_model=ResultPage, response_model_exclude_unset=True)
def results(filters: ResultFilter = Depends(result_filters), paging: Paging = Depends(),
            user: SessionUser = Depends(current_user), session: Session = DB) -> ResultPage:
    """One row per page (or per document without pages), filtered; newest model prediction and review."""
    if filters.patient is not None and not user.sees_identifiers:
        raise HTTPException(403, "filtering by patient needs the reviewer role")
    rows = queries.page_results(session, filters, limit=paging.limit, offset=paging.offset)
    total = queries.count_page_results(session, filters)
    records.audit(session, user, "view_results", filters=query_string(filters), offset=paging.offset,
                  shown=len(rows))
    return ResultPage(total=total, limit=paging.limit, offset=paging.offset,
                      items=[visible_row(row, user) for row in rows])


def worklist_page(session: Session, filters: ResultFilter, paging: Paging, user: SessionUser,
                  after: WorklistKey | None = None, start: int | None = None) -> ResultPage:
    """Unreviewed predicted pages, most urgent first (high MI probability, then most uncertain), after the
    cursor `after` when given; `next` is the cursor of this page's last row when more follow. `start` is the
    position the caller knows the page starts at (the HTML numbering); else `offset`."""
    rows, keys = queries.worklist_after(session, filters, paging.limit + 1, after, paging.offset)
    more = len(rows) > paging.limit
    rows = rows[:paging.limit]
    total = queries.count_page_results(session, _unreviewed(filters))
    records.audit(session, user, "view_worklist", filters=query_string(filters), offset=paging.offset,
                  after=encode_cursor(after) if after else None, shown=len(rows))
    return ResultPage(total=total, limit=paging.limit, offset=paging.offset if start is None else start,
                      next=encode_cursor(keys[paging.limit - 1]) if more else None,
                      items=[visible_row(row, user) for row in rows])


def _unreviewed(filters: ResultFilter) -> ResultFilter:
    return replace(filters, status="unreviewed")


@router.get("/worklist", response_model=ResultPage, response_model_exclude_unset=True)
def worklist(filters: ResultFilter = Depends(worklist_filters), paging: Paging = Depends(),
             after: WorklistKey | None = Depends(worklist_cursor), user: SessionUser = Depends(current_user),
             session: Session = DB) -> ResultPage:
    """Unreviewed predicted pages, most urgent first: high MI probability, then the most uncertain. Page on
    with `after` (each answer's `next`): deep pages cost what the first does; `offset` still works."""
    return worklist_page(session, filters, paging, user, after)


def page_detail(session: Session, page_id: int, user: SessionUser, serving: tuple[str, ...]) -> tuple[dict, PageDetail]:
    """A page's row, its labels and thresholds, and image URLs, with its `view_page` audit event."""
    row = records.page_or_404(session, page_id)
    records.audit(session, user, "view_page", row)
    waveform, trace_path = records.waveform(session, page_id)
    images = {kind: f"/api/pages/{page_id}/images/{kind}" for kind in records.image_kinds(user)
              if kind != "trace" or trace_path}
    labels = records.page_labels(row, serving)
    reading = device_reading(queries.source_metadata(session, row["document_id"]))
    return row, PageDetail(page=visible_row(row, user), labels=labels,
                           thresholds=records.thresholds(session, row, labels), images=images,
                           device_reading=reading, waveform=waveform)


@router.get("/pages/{page_id}", response_model=PageDetail, response_model_exclude_unset=True)
def page(page_id: PageId, labels: Labels, user: SessionUser = Depends(current_user),
         session: Session = DB) -> PageDetail:
    """One page: its row, the labels of the model that read it, their thresholds, and where its images are."""
    return page_detail(session, page_id, user, labels)[1]


@router.get("/pages/{page_id}/images/{kind}", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
def image(request: Request, page_id: PageId, kind: records.ImageKind, user: SessionUser = Depends(current_user),
          session: Session = DB) -> FileResponse:
    """The original sheet's thumbnail (reviewers and admins), the cleaned model input, its Grad-CAM overlay (an
    RGBA PNG, computed on first request and cached), or the trace: the page with its leads read back (reviewers
    and admins)."""
    if kind not in records.image_kinds(user):
        raise HTTPException(403, f"the {kind} sheet can show patient identifiers: reviewers and admins only")
    row = records.page_or_404(session, page_id)
    if kind == "trace":
        row = {**row, "trace_path": records.waveform(session, page_id)[1]}
    cleaned = records.stored_image(row, "cleaned" if kind == "gradcam" else kind)
    try:
        path = cleaned
        if kind == "gradcam":
            path = request.app.state.gradcam.png(page_id, cleaned, records.model_bundle(session, row, request))
    except BundleError as exc:
        raise HTTPException(503, f"Grad-CAM needs a usable model bundle: {exc}") from exc
    records.audit(session, user, "view_image", row, kind=kind)
    return FileResponse(path, headers={"Cache-Control": "private, no-store"})


@router.post("/pages/{page_id}/review", response_model=ReviewOut, status_code=201, openapi_extra=CSRF_DOC)
def review(page_id: PageId, body: ReviewIn, labels: Labels, user: SessionUser = Depends(require("reviewer")),
           session: Session = DB) -> ReviewOut:
    """Store a reviewer's labels (in the page's label order) and comment for a page; needs the reviewer role."""
    row = records.page_or_404(session, page_id)
    saved = records.save_review(session, user, row, list(body.labels), body.comment, labels)
    return ReviewOut(review_id=saved.id, page_id=page_id, reviewer=user.name, labels=list(saved.labels),
                     comment=saved.comment, created_at=saved.created_at)
