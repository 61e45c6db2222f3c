"""/metrics, /healthz and /readyz of the review app, answered without a session.

They carry no patient data: counts and timings under fixed labels, "ok", and the doctor's database check.
Every other path stays behind login (`app.py`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

router = APIRouter(include_in_schema=False)
PUBLIC_PATHS = ("/metrics", "/healthz", "/readyz")


@router.get("/metrics")
def scrape(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
def alive() -> Response:
    return PlainTextResponse("ok\n")


@router.get("/readyz")
def ready(request: Request) -> Response:
    status, body = request.app.state.readiness()
    return JSONResponse(body, status_code=status)
