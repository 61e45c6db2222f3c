"""The review UI against hostile access: the real `ecg-intake review` server (its own home and small login
limits), plain HTTP probes and headless Chromium. Security headers on every response, no role escalation
through the API or a forged session, login throttling per user name and per client address, and pages that
run under the Content-Security-Policy without a single violation."""

from __future__ import annotations

import base64
import functools
import http.client
import json
import re
import shutil
import sqlite3
import time
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.request import HTTPCookieProcessor, HTTPHandler, Request, build_opener

import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import select, update

from tests.helpers.review import PASSWORD, Answer, Http, NoRedirect, ReviewSite, serve_review
from worker.db.models import Event, Review, User
from worker.db.session import session_scope

MAX_FAILURES, MAX_PER_ADDRESS, WINDOW_S = 3, 6, 15


@pytest.fixture(scope="module")
def review_env() -> dict[str, str]:
    """Small login limits for this module's review server (the shared `review_site` fixture)."""
    return {"ECG_INTAKE_REVIEW_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
            "ECG_INTAKE_REVIEW_LOGIN_MAX_FAILURES_PER_ADDRESS": str(MAX_PER_ADDRESS),
            "ECG_INTAKE_REVIEW_LOGIN_WINDOW_SECONDS": str(WINDOW_S)}


def _client(review_site: ReviewSite, name: str) -> Http:
    client = Http(review_site.url)
    assert client.login(name).status == 303, name
    return client


class _FromAddress(HTTPHandler):
    """Connects from another loopback address, as a second client machine would."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    def http_open(self, req: Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(http.client.HTTPConnection, source_address=(self.address, 0)), req)


def _from(review_site: ReviewSite, address: str) -> Http:
    client = Http(review_site.url)
    client.opener = build_opener(HTTPCookieProcessor(CookieJar()), NoRedirect, _FromAddress(address))
    return client


def _check_headers(answer: Answer, where: str, static: bool = False, hsts: bool = False) -> None:
    headers = answer.headers
    csp = headers["Content-Security-Policy"] or ""
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp, where
    assert re.search(r"(^|;)\s*default-src 'self'", csp) and "script-src 'self'" in csp, where
    assert headers["X-Content-Type-Options"] == "nosniff", where
    assert headers["X-Frame-Options"] == "DENY", where
    assert headers["Referrer-Policy"] == "no-referrer", where
    if not static:
        assert "no-store" in (headers["Cache-Control"] or ""), where
    assert (headers["Strict-Transport-Security"] is not None) == hsts, where


def _probes(review_site: ReviewSite) -> list[tuple[str, str, bool]]:
    """(method, path, static) for pages, API answers, images, errors and static files."""
    page = review_site.pages["urgent"]
    paths = ["/login", "/", "/worklist", f"/pages/{page}", "/worklist/at/0", "/docs", "/openapi.json", "/api/me",
             "/api/results", "/api/worklist", f"/api/pages/{page}", f"/api/pages/{page}/images/cleaned",
             f"/api/pages/{page}/images/original", "/api/pages/999999", "/api/pages/x", "/no/such/page"]
    return [("GET", path, False) for path in paths] + [
        ("POST", "/logout", False), ("POST", f"/api/pages/{page}/review", False), ("GET", "/static/review.css", True),
        ("GET", "/static/review.js", True), ("GET", "/static/missing.js", True)]


def test_every_response_carries_the_security_headers(review_site: ReviewSite) -> None:
    """Anonymous and logged in, success and error, page, JSON, image and static file alike."""
    for who, client in (("anonymous", Http(review_site.url)), ("viewer", _client(review_site, "vera"))):
        for method, path, static in _probes(review_site):
            answer = client.call(method, path)
            _check_headers(answer, f"{who} {method} {path} -> {answer.status}", static)
    failed = Http(review_site.url).login("nobody-at-all", "wrong")
    assert failed.status == 401
    _check_headers(failed, "failed login")


def test_https_only_adds_strict_transport_security_even_to_a_server_error(bundle_dir: Path, tmp_path: Path) -> None:
    with serve_review(tmp_path, bundle_dir, {"ECG_INTAKE_REVIEW_HTTPS_ONLY": "true"}) as server:
        for method, path, static in _probes(server)[:3] + _probes(server)[-2:]:
            _check_headers(Http(server.url).call(method, path), f"{method} {path}", static, hsts=True)
        assert "max-age=" in Http(server.url).get("/login").headers["Strict-Transport-Security"]
        client = Http(server.url)  # the cookie is Secure: over plain http the client sends it back by hand
        form = client.get("/login")
        cookie = re.search(r"ecg_review=([^;]+)", form.headers["Set-Cookie"]).group(1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        login = client.post("/login", form={"name": "vera", "password": PASSWORD, "csrf_token": token},
                            headers={"Cookie": f"ecg_review={cookie}"})
        assert login.status == 303 and "secure" in login.headers["Set-Cookie"].lower()
        cookie = re.search(r"ecg_review=([^;]+)", login.headers["Set-Cookie"]).group(1)
        assert client.get("/api/me", headers={"Cookie": f"ecg_review={cookie}"}).status == 200
        with sqlite3.connect(server.home / "ecg-intake.db") as db:  # now every user lookup fails: no such table
            db.execute("ALTER TABLE users RENAME TO users_gone")
        answer = client.get("/api/me", headers={"Cookie": f"ecg_review={cookie}"})
        assert answer.status == 500 and "Traceback" not in answer.text and "users" not in answer.text
        _check_headers(answer, "500", hsts=True)


def test_no_file_outside_static_is_served(review_site: ReviewSite) -> None:
    for path in ("/static/../auth.py", "/static/..%2fauth.py", "/static/%2e%2e/auth.py",
                 "/static/..%2f..%2fsettings.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
                 "/static/../../../../etc/passwd"):
        answer = Http(review_site.url).get(path)
        assert answer.status in (303, 404), (path, answer.status)
        assert b"import" not in answer.body and b"root:" not in answer.body, path


def _forged_cookie(payload: dict, key: str) -> str:
    """A session cookie as Starlette's SessionMiddleware writes it, signed with `key`."""
    data = base64.b64encode(json.dumps(payload).encode())
    return TimestampSigner(key).sign(data).decode()


def test_no_role_escalation(review_site: ReviewSite) -> None:
    """Viewers and reviewers cannot become admins: no route changes a user, extra fields are ignored, a forged
    or tampered session is anonymous, and a role change in the database binds the very next request."""
    viewer, reviewer = _client(review_site, "vera"), _client(review_site, "rita")
    with session_scope(review_site.db_url) as session:
        ids = {u.name: u.id for u in session.scalars(select(User))}
        before = {u.name: (u.role, u.disabled, u.password_hash) for u in session.scalars(select(User))}
    spec = reviewer.get("/openapi.json").json()
    writes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m != "get"]
    assert writes == [("POST", "/api/pages/{page_id}/review")]  # the API's only write; users change by CLI
    for client, role in ((viewer, "viewer"), (reviewer, "reviewer")):
        token = client.csrf()
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for path in ("/api/me", "/api/users", f"/api/users/{ids['vera']}", "/api/users/ada",
                         "/api/users/vera/role", "/api/admin", "/users", "/admin"):
                answer = client.call(method, path, body={"role": "admin", "name": "vera", "disabled": False},
                                     headers={"X-CSRF-Token": token})
                assert answer.status in (403, 404, 405), (role, method, path, answer.status)
        assert client.get("/api/me").json()["role"] == role
    page = review_site.pages["calm"]
    answer = viewer.post(f"/api/pages/{page}/review", body={"labels": ["AF"], "role": "reviewer"},
                         headers={"X-CSRF-Token": viewer.csrf()})
    assert answer.status == 403

    # a login form with extra fields gets the stored role, nothing else
    sneaky = Http(review_site.url)
    form = {"name": "vera", "password": PASSWORD, "csrf_token": sneaky.form_token(), "role": "admin", "uid": "1"}
    assert sneaky.post("/login", form=form).status == 303 and sneaky.get("/api/me").json()["role"] == "viewer"

    # a review names its reviewer from the session, never from the body
    answer = reviewer.post(f"/api/pages/{page}/review", headers={"X-CSRF-Token": reviewer.csrf()},
                           body={"labels": ["CD"], "reviewer": "ada", "reviewer_id": ids["ada"]})
    assert answer.status == 201 and answer.json()["reviewer"] == "rita"
    with session_scope(review_site.db_url) as session:
        assert session.get(Review, answer.json()["review_id"]).reviewer_id == ids["rita"]

    # the cookie: signed with another key, tampered, or replayed with another uid: no session at all
    key = (review_site.home / "review-secret").read_text().strip()
    for cookie in (_forged_cookie({"uid": ids["ada"], "csrf_token": "x"}, "not-the-key"),
                   _tamper(viewer, ids["ada"]), "garbage", ""):
        probe = Http(review_site.url)
        answer = probe.get("/api/me", headers={"Cookie": f"ecg_review={cookie}"})
        assert answer.status == 401, cookie
    assert Http(review_site.url).get("/api/me", headers={
        "Cookie": f"ecg_review={_forged_cookie({'uid': ids['ada']}, key)}"}).status == 200  # the key is the secret

    # demoted in the database: the open session loses the right at once
    with session_scope(review_site.db_url) as session:
        session.execute(update(User).where(User.name == "rita").values(role="viewer"))
    try:
        assert reviewer.get("/api/me").json()["role"] == "viewer"
        assert reviewer.post(f"/api/pages/{page}/review", body={"labels": []},
                             headers={"X-CSRF-Token": reviewer.csrf()}).status == 403
    finally:
        with session_scope(review_site.db_url) as session:
            session.execute(update(User).where(User.name == "rita").values(role="reviewer"))
    with session_scope(review_site.db_url) as session:
        after = {u.name: (u.role, u.disabled, u.password_hash) for u in session.scalars(select(User))}
    assert after == before


def _tamper(client: Http, uid: int) -> str:
    """The client's own valid cookie with the uid inside changed and the old signature kept."""
    jar = next(h.cookiejar for h in client.opener.handlers if isinstance(h, HTTPCookieProcessor))
    cookie = next(c.value for c in jar if c.name == "ecg_review")
    data, stamp, signature = cookie.rsplit(".", 2)
    payload = json.loads(base64.b64decode(data))
    payload["uid"] = uid
    return f"{base64.b64encode(json.dumps(payload).encode()).decode()}.{stamp}.{signature}"


def _wait_out(answer: Answer) -> None:
    wait = int(answer.headers["Retry-After"])
    assert 1 <= wait <= WINDOW_S
    time.sleep(wait + 0.2)


def test_login_is_throttled_per_user_name(review_site: ReviewSite) -> None:
    """Each test here guesses from its own loopback address, so their address counts stay apart."""
    for _ in range(MAX_FAILURES):
        assert _from(review_site, "127.0.0.3").login("vera", "guess").status == 401
    locked = _from(review_site, "127.0.0.4").login("VERA ")  # the right password, another address, the name respelled
    assert locked.status == 429 and "Too many failed logins" in locked.text
    assert "Wrong name or password" not in locked.text  # the password was not even checked
    _check_headers(locked, "429")
    assert _from(review_site, "127.0.0.3").login("rita").status == 303  # another user on the same address is not locked
    _wait_out(locked)
    assert _from(review_site, "127.0.0.3").login("vera").status == 303
    with session_scope(review_site.db_url) as session:
        actions = list(session.scalars(select(Event.action).where(Event.actor.in_(["vera", "VERA "]))))
    assert actions.count("login_failed") >= MAX_FAILURES and "login_throttled" in actions


def test_login_is_throttled_per_client_address(review_site: ReviewSite) -> None:
    for i in range(MAX_PER_ADDRESS):  # a different name each time: only the address ties them together
        assert _from(review_site, "127.0.0.5").login(f"guess-{i}", "guess").status == 401
    locked = _from(review_site, "127.0.0.5").login("ada")
    assert locked.status == 429 and 1 <= int(locked.headers["Retry-After"]) <= WINDOW_S
    other = _from(review_site, "127.0.0.6")  # another client is not locked out by this one
    assert other.login("ada").status == 303 and other.get("/api/me").json()["name"] == "ada"


def test_pages_run_under_the_csp_without_violations(review_site: ReviewSite) -> None:
    """The login form, the worklist, a page with its Grad-CAM overlay and keyboard shortcuts, and the API
    docs: the browser reports no Content-Security-Policy violation, and the scripts did their work."""
    from playwright.sync_api import sync_playwright

    record = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
              "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    violations: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             headless=True)
        page = browser.new_page()
        page.add_init_script(record)
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)

        def seen() -> None:
            violations.extend(page.evaluate("window.__csp || []"))

        page.goto(review_site.url + "/login")
        seen()
        page.fill("input[name=name]", "rita")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/worklist")
        seen()
        page.locator("table.worklist tbody tr a.open").first.click()
        page.wait_for_url("**/pages/*")
        page.keyboard.press("g")
        page.wait_for_function("() => { const i = document.getElementById('gradcam');"
                               " return !i.hidden && i.complete && i.naturalWidth > 0; }", timeout=120_000)
        before = page.locator("input[name=labels][value=AF]").is_checked()
        page.keyboard.press("2")  # AF, toggled by review.js
        assert page.locator("input[name=labels][value=AF]").is_checked() != before
        seen()
        page.goto(review_site.url + "/docs")
        page.wait_for_selector("section.operation")  # drawn by docs.js from /openapi.json
        seen()
        browser.close()
    assert violations == []
