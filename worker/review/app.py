"""The review web application: sessions, CSRF on every state change, security headers, and the routers.

Without a session only /login (and its static files) answer: /api/ and /openapi.json say 401, every
other page redirects to the login form.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from worker.review import api, views
from worker.review.auth import LoginRequired, csrf_protect, session_secret
from worker.review.gradcam import GradCam
from worker.settings import Settings

STATIC = Path(__file__).parent / "static"
SESSION_HOURS = 8
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


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


def create_app(settings: Settings) -> FastAPI:
    """The app for one installation's settings; nothing runs until a server serves it."""
    app = FastAPI(title="ecg-intake review", version="1",
                  description="Review the model's findings on scanned ECG pages. Log in at /login first; "
                              "POST requests need the session's CSRF token in the X-CSRF-Token header.",
                  docs_url=None, redoc_url=None, openapi_url=None,  # served behind login by `views`
                  dependencies=[Depends(csrf_protect)])
    app.state.settings = settings
    app.state.gradcam = GradCam(settings.bundle_dir, settings.home_dir / "gradcam", settings.torch_threads)

    @app.middleware("http")
    async def security_headers(request: Request, call_next) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "private, no-store"  # pages carry patient data
        return response

    app.add_middleware(SessionMiddleware, secret_key=session_secret(settings), session_cookie="ecg_review",
                       max_age=SESSION_HOURS * 3600, same_site="strict", https_only=settings.review_https_only)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.router)
    app.include_router(views.router)
    return app
