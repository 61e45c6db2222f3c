"""The HTML pages: login, the worklist, one page with its review form, and the API docs.

They share the JSON API's queries, filters and audit events; only the rendering differs. Forms post
the session's CSRF token in a hidden field (checked app-wide by `auth.csrf_protect`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from worker.db import queries
from worker.db.queries import ResultFilter, WorklistKey
from worker.review import api, ratelimit, records
from worker.review.auth import (
    DB,
    SessionUser,
    authenticate,
    csrf_token,
    current_user,
    end_session,
    require,
    start_session,
)
from worker.review.filters import (
    MAX_OFFSET,
    Labels,
    Paging,
    query_string,
    worklist_cursor,
    worklist_filters,
)
from worker.review.schemas import DEVICE_MEASUREMENTS, WAVEFORM_MEASUREMENTS

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=FilePath(__file__).parent / "templates")
Position = Annotated[int | None, Query(ge=0, le=MAX_OFFSET)]
MAX_KEY = 9  # labels past the ninth have no number key


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A template with what every page needs: the user (if any) and the CSRF token."""
    return templates.TemplateResponse(request, name, {"csrf_token": csrf_token(request), "user": None, **context},
                                      status_code=status_code)


def safe_next(target: str | None) -> str:
    """Only a path on this site: `//host` or `https://host` after login would be an open redirect."""
    if not target or not re.fullmatch(r"/(?![/\\])[!-~]*", target) or "\\" in target:
        return "/worklist"  # printable ASCII only: browsers drop tabs and newlines, so "/\t/host" means "//host"
    return target


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", next=safe_next(next), error=None)


@router.post("/login")
def login(request: Request, name: Annotated[str, Form(max_length=128)], password: Annotated[str, Form(max_length=1024)],
          next: Annotated[str, Form()] = "/worklist", session: Session = DB) -> Response:
    """Too many recent failures from this client for this name, from this address, or (for a client that has
    failed) for this name: 429 with Retry-After, and the password is not even checked, so guessing stops
    paying while the user elsewhere still logs in (`ratelimit`)."""
    limits = request.app.state.login_limits
    attempt = ratelimit.Attempt(name, request.client.host if request.client else None)
    wait = ratelimit.retry_after(session, limits, attempt)
    if wait is not None:
        log.warning("review login throttled for %r from %s: retry in %d s", name[:128], attempt.address, wait)
        records.audit(session, name or "?", "login_throttled", address=attempt.address, retry_after=wait)
        answer = render(request, "login.html", 429, next=safe_next(next),
                        error=f"Too many failed logins. Try again in {wait} seconds.")
        answer.headers["Retry-After"] = str(wait)
        return answer
    user = authenticate(session, name, password)
    if user is None:
        ratelimit.record_failure(session, limits, attempt)
        records.audit(session, name or "?", "login_failed", address=attempt.address)
        return render(request, "login.html", 401, next=safe_next(next), error="Wrong name or password.")
    ratelimit.record_success(session, attempt)
    start_session(request, session, user)
    records.audit(session, user, "login")
    return _see_other(safe_next(next))


@router.post("/logout")
def logout(request: Request, user: SessionUser = Depends(current_user),
           session: Session = DB) -> Response:
    records.audit(session, user, "logout")
    end_session(request, session)
    return _see_other("/login")


@router.get("/")
def home(_user: SessionUser = Depends(current_user)) -> Response:
    return _see_other("/worklist")


@router.get("/worklist")
def worklist(request: Request, labels: Labels, filters: ResultFilter = Depends(worklist_filters),
             paging: Paging = Depends(), after: WorklistKey | None = Depends(worklist_cursor),
             start: Position = None, user: SessionUser = Depends(current_user), session: Session = DB
             ) -> HTMLResponse:
    """Next pages by cursor (`after`, with `start` the position it numbers from); previous ones by offset."""
    listing = api.worklist_page(session, filters, paging, user, after, start if after else None)
    params = query_string(filters)
    columns = queries.row_labels((row.model_dump() for row in listing.items), labels)
    return render(request, "worklist.html", user=user, listing=listing, filters=params, qs=urlencode(params),
                  labels=labels, columns=columns, keys=min(len(labels), MAX_KEY),
                  query=lambda **extra: urlencode({**params, "limit": paging.limit, **extra}))


@router.get("/worklist/at/{position}")
def worklist_at(position: Annotated[int, Path(ge=0, le=MAX_OFFSET)],
                filters: ResultFilter = Depends(worklist_filters), _user: SessionUser = Depends(current_user),
                session: Session = DB) -> Response:
    """The page at a position of the current worklist: previous/next, and the next page after a save."""
    rows = queries.worklist(session, filters, 1, position)
    qs = urlencode(query_string(filters))
    if not rows or rows[0].get("page_id") is None:
        return _see_other(f"/worklist?{qs}")
    return _see_other(f"/pages/{rows[0]['page_id']}?{urlencode({'at': position, **query_string(filters)})}")


@router.get("/pages/{page_id}")
def page(request: Request, page_id: api.PageId, labels: Labels, at: Position = None,
         filters: ResultFilter = Depends(worklist_filters), user: SessionUser = Depends(current_user),
         session: Session = DB) -> HTMLResponse:
    row, detail = api.page_detail(session, page_id, user, labels)
    qs = urlencode(query_string(filters))
    prev_url = next_url = None
    if at is not None:
        prev_url = f"/worklist/at/{at - 1}?{qs}" if at > 0 else None
        # a page reviewed meanwhile has left the worklist: the one after it now holds its position
        next_url = f"/worklist/at/{at + 1 if row.get('review_id') is None else at}?{qs}"
    probabilities = detail.page.probabilities
    bars = [{"label": label, "key": i + 1 if i < MAX_KEY else None, "p": probabilities.get(label),
             "t": detail.thresholds[label], "model": label in detail.page.model_labels}
            for i, label in enumerate(detail.labels)]
    chosen = detail.page.review_labels if detail.page.review_labels is not None else detail.page.model_labels
    return render(request, "page.html", user=user, detail=detail, row=detail.page, bars=bars, chosen=set(chosen),
                  at=at, qs=qs, prev_url=prev_url, next_url=next_url,
                  can_review=user.has_role("reviewer"), reading=detail.device_reading,
                  measurement_names=DEVICE_MEASUREMENTS, waveform=detail.waveform,
                  waveform_names=WAVEFORM_MEASUREMENTS)


@router.post("/pages/{page_id}/review")
def review(page_id: api.PageId, serving: Labels, labels: Annotated[list[str] | None, Form()] = None,
           comment: Annotated[str, Form(max_length=4000)] = "",
           at: Annotated[int | None, Form(ge=0, le=MAX_OFFSET)] = None,
           filters: Annotated[str, Form(max_length=2000)] = "", user: SessionUser = Depends(require("reviewer")),
           session: Session = DB) -> Response:
    """Save, then go on: the saved page leaves the worklist, so the same position holds the next page."""
    row = records.page_or_404(session, page_id)
    records.save_review(session, user, row, labels or [], comment, serving)
    qs = urlencode(parse_qsl(filters))
    return _see_other(f"/worklist/at/{at}?{qs}" if at is not None else f"/pages/{page_id}")


@router.get("/docs")
def docs(request: Request, user: SessionUser = Depends(current_user)) -> HTMLResponse:
    """The API reference, drawn from /openapi.json by a local script (no CDN)."""
    return render(request, "docs.html", user=user)


@router.get("/openapi.json")
def openapi(request: Request, _user: SessionUser = Depends(current_user)) -> JSONResponse:
    return JSONResponse(request.app.openapi())
