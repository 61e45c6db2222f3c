"""The review web application: sessions, CSRF on every state change, security headers, login throttling,
and the routers.

Without a session only /login (and its static files) and the probes (`probes.PUBLIC_PATHS`: /metrics,
/healthz, /readyz) answer: /api/ and /openapi.json say 401, every other page redirects to the login form.
Every response carries the security headers (`SECURITY_HEADERS`; HSTS too when `review_https_only` is on);
every response but a static file is `Cache-Control: no-store`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from worker import metrics
from worker.health import Readiness
from worker.review import api, probes, views
from worker.review.auth import LoginRequired, csrf_protect, session_secret
from worker.review.gradcam import GradCam
from worker.review.ratelimit import Limits
from worker.settings import Settings

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")  # no 'unsafe-inline': no inline code
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "same-origin", "Cross-Origin-Opener-Policy": "same-origin",
                    "Cross-Origin-Resource-Policy": "same-origin"}
HSTS = "max-age=31536000"  # only sent when the site is served over https (`review_https_only`)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"


async def _login_required(request: Request, _exc: Exception) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": "login required"}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


async def _http_error(request: Request, exc: Exception) -> Response:
    """JSON for the API, a readable page for people."""
    assert isinstance(exc, StarletteHTTPException)
    if _is_api(request):
        return await http_exception_handler(request, exc)
    return views.render(request, "error.html", exc.status_code, status=exc.status_code, detail=exc.detail)


def _json_safe(value: Any) -> Any:
    """Text as UTF-8 can carry it: a lone surrogate (a JSON `\\ud800` escape) becomes `?`."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def _invalid_request(_request: Request, exc: Exception) -> Response:
    """FastAPI's 422, whose detail echoes the bad input: made JSON-safe, so odd input stays a 4xx, never a 500."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def create_app(settings: Settings) -> FastAPI:
    """The app for one installation's settings; nothing runs until a server serves it."""
    app = FastAPI(title="ecg-intake review", version="1",
                  description="Review the model's findings on scanned ECG pages. Log in at /login first; "
                              "POST requests need the session's CSRF token in the X-CSRF-Token header.",
                  docs_url=None, redoc_url=None, openapi_url=None,  # served behind login by `views`
                  dependencies=[Depends(csrf_protect)])
    app.state.settings = settings
    app.state.gradcam = GradCam(settings.home_dir / "gradcam", settings.torch_threads)
    app.state.login_limits = Limits.from_settings(settings)
    app.state.metrics = metrics.registry()
    app.state.readiness = Readiness(settings, "review", details=False)
    headers = {**SECURITY_HEADERS, **({"Strict-Transport-Security": HSTS} if settings.review_https_only else {})}

    @app.middleware("http")
    async def security_headers(request: Request, call_next) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        took = time.perf_counter() - started
        route = request.scope.get("route")  # the template (/api/pages/{page_id}): a label never holds an id
        metrics.review_request(request.method, getattr(route, "path", "unmatched"), response.status_code, took)
        response.headers["Server-Timing"] = f"app;dur={took * 1000:.1f}"
        response.headers.update(headers)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "private, no-store"  # pages carry patient data
        return response

    app.add_middleware(SessionMiddleware, secret_key=session_secret(settings), session_cookie="ecg_review",
                       max_age=int(settings.review_session_hours * 3600), same_site="strict",
                       https_only=settings.review_https_only)
    async def server_error(_request: Request, _exc: Exception) -> Response:
        """An unexpected fault: this answer is made outside the middleware above, so it carries the headers
        itself, and it says nothing about the fault."""
        return PlainTextResponse("Internal Server Error", 500, headers={**headers, "Cache-Control": "no-store"})

    app.add_exception_handler(Exception, server_error)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(probes.router)
    app.include_router(api.router)
    app.include_router(views.router)
    return app
