"""The review UI against hostile access: the real `ecg-intake review` server (its own home and small login
limits), plain HTTP probes and headless Chromium. Security headers on every response, no role escalation
through the API or a forged session, login throttling per user name and per client address, and pages that
run under the Content-Security-Policy without a single violation."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import json
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import HTTPCookieProcessor, HTTPHandler, Request, build_opener

import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import delete, select, update

from tests.helpers.review import PASSWORD, Answer, Http, NoRedirect, ReviewSite, serve_review
from tests.helpers.servers import free_port, port_open
from worker.db.models import Document, Event, Review, ReviewSession, User
from worker.db.session import session_scope

MAX_FAILURES, MAX_PER_NAME, MAX_PER_ADDRESS, WINDOW_S = 3, 5, 6, 15


@pytest.fixture(scope="module")
def review_env() -> dict[str, str]:
    """Small login limits for this module's review server (the shared `review_site` fixture)."""
    return {"ECG_INTAKE_REVIEW_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
            "ECG_INTAKE_REVIEW_LOGIN_MAX_FAILURES_PER_NAME": str(MAX_PER_NAME),
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
    assert headers["Referrer-Policy"] == "same-origin", where  # no-referrer would blank Origin
    if not static:
        assert "no-store" in (headers["Cache-Control"] or ""), where
    assert (headers["Strict-Transport-Security"] is not None) == hsts, where


def _probes(review_site: ReviewSite) -> list[tuple[str, str, bool]]:
    """(method, path, static) for pages, API answers, images, errors and static files."""
    page = review_site.pages["urgent"]
    paths = ["/login", "/", "/worklist", f"/pages/{page}", "/worklist/at/0", "/docs", "/openapi.json", "/api/me",
             "/api/results", "/api/worklist", f"/api/pages/{page}", f"/api/pages/{page}/images/cleaned",
             f"/api/pages/{page}/images/original", "/api/pages/999999", "/api/pages/x", "/no/such/page", "/metrics",
             "/healthz", "/readyz"]
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
    for payload in ({"uid": ids["ada"]}, {"sid": "made-up", "uid": ids["ada"]}):  # even the key makes no session:
        forged = _forged_cookie(payload, key)  # only a session id the server handed out and still holds
        assert Http(review_site.url).get("/api/me", headers={"Cookie": f"ecg_review={forged}"}).status == 401

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


def _cookie(client: Http) -> str:
    jar = next(h.cookiejar for h in client.opener.handlers if isinstance(h, HTTPCookieProcessor))
    return next(c.value for c in jar if c.name == "ecg_review")


def _tamper(client: Http, uid: int) -> str:
    """The client's own valid cookie with a uid put inside and the old signature kept."""
    data, stamp, signature = _cookie(client).rsplit(".", 2)
    payload = json.loads(base64.b64decode(data))
    payload["uid"] = uid
    return f"{base64.b64encode(json.dumps(payload).encode()).decode()}.{stamp}.{signature}"


def _wait_out(answer: Answer) -> None:
    wait = int(answer.headers["Retry-After"])
    assert 1 <= wait <= WINDOW_S
    time.sleep(wait + 0.2)


def test_login_is_throttled_per_name_and_address(review_site: ReviewSite) -> None:
    """Each test here guesses from its own loopback address, so their address counts stay apart. The guesser's
    address is refused for that name, even with the right password; the user elsewhere logs in."""
    for _ in range(MAX_FAILURES):
        assert _from(review_site, "127.0.0.3").login("vera", "guess").status == 401
    locked = _from(review_site, "127.0.0.3").login("VERA ")  # the right password, the name respelled
    assert locked.status == 429 and "Too many failed logins" in locked.text
    assert "Wrong name or password" not in locked.text  # the password was not even checked
    _check_headers(locked, "429")
    assert _from(review_site, "127.0.0.4").login("vera").status == 303  # vera elsewhere is not locked out
    assert _from(review_site, "127.0.0.3").login("rita").status == 303  # another user on the same address is not
    _wait_out(locked)
    assert _from(review_site, "127.0.0.3").login("vera").status == 303
    with session_scope(review_site.db_url) as session:
        actions = list(session.scalars(select(Event.action).where(Event.actor.in_(["vera", "VERA "]))))
    assert actions.count("login_failed") >= MAX_FAILURES and "login_throttled" in actions


def test_a_guesser_cannot_lock_a_user_out(review_site: ReviewSite) -> None:
    """Failures for rita from other addresses refuse those addresses; past the per-name limit only a client
    that has not failed for rita gets its password checked, so rita herself still logs in."""
    for _ in range(MAX_FAILURES):
        assert _from(review_site, "127.0.0.7").login("rita", "guess-7").status == 401
    assert _from(review_site, "127.0.0.7").login("rita").status == 429  # the attacker stays refused
    assert _from(review_site, "127.0.0.8").login("rita").status == 303
    for _ in range(MAX_PER_NAME - MAX_FAILURES):  # now the name is over its limit
        assert _from(review_site, "127.0.0.9").login("rita", "guess-9").status == 401
    assert _from(review_site, "127.0.0.9").login("rita").status == 429  # it has failed: refused
    assert _from(review_site, "127.0.0.10").login("rita", "guess-10").status == 401  # a fresh client: checked
    assert _from(review_site, "127.0.0.10").login("rita").status == 429
    assert _from(review_site, "127.0.0.11").login("rita").status == 303  # rita, never failed, logs in
    assert _from(review_site, "127.0.0.7").login("rita").status == 429
    log = (review_site.home.parent / "review.log").read_text()
    assert "login throttled" in log and "guess-" not in log  # the event is logged, never a password


def test_logout_ends_the_session(review_site: ReviewSite) -> None:
    """The cookie of a logged-out session is worth nothing: replayed, it reads nothing and posts nothing."""
    client = _client(review_site, "rita")
    token, cookie = client.csrf(), _cookie(client)
    assert client.post("/logout", form={"csrf_token": token}).status == 303
    replay = Http(review_site.url)
    headers = {"Cookie": f"ecg_review={cookie}"}
    assert replay.get("/api/me", headers=headers).status == 401
    answer = replay.post(f"/api/pages/{review_site.pages['calm']}/review", body={"labels": ["AF"]},
                         headers={**headers, "X-CSRF-Token": token})
    assert answer.status in (401, 403)
    assert replay.get("/worklist", headers=headers).status == 303


def _session_row(client: Http) -> str:
    """The `sessions` key of the client's session: the id in its cookie, hashed."""
    payload = json.loads(base64.b64decode(_cookie(client).rsplit(".", 2)[0]))
    return hashlib.sha256(payload["sid"].encode()).hexdigest()


def test_sessions_time_out_when_idle_and_after_their_hours(review_site: ReviewSite) -> None:
    idle, old, fresh = (_client(review_site, "vera") for _ in range(3))
    now = datetime.now(UTC)
    with session_scope(review_site.db_url) as session:
        session.execute(update(ReviewSession).where(ReviewSession.id == _session_row(idle))
                        .values(last_seen_at=now - timedelta(minutes=31)))
        session.execute(update(ReviewSession).where(ReviewSession.id == _session_row(old))
                        .values(created_at=now - timedelta(hours=8, minutes=1), last_seen_at=now))
    assert idle.get("/api/me").status == 401 and old.get("/api/me").status == 401
    assert fresh.get("/api/me").status == 200


def test_a_password_change_ends_the_users_sessions(review_site: ReviewSite) -> None:
    first, second, other = _client(review_site, "rita"), _client(review_site, "rita"), _client(review_site, "vera")
    changed = subprocess.run(review_site.cli.command("users", "password", "rita", "--password-stdin"),
                             input=PASSWORD + "\n", env=review_site.cli.env, cwd=review_site.cli.cwd,
                             capture_output=True, text=True, timeout=120)
    assert changed.returncode == 0, changed.stderr
    assert first.get("/api/me").status == 401 and second.get("/api/me").status == 401
    assert other.get("/api/me").status == 200
    again = _client(review_site, "rita")
    assert again.get("/api/me").status == 200


def test_a_foreign_origin_is_refused(review_site: ReviewSite) -> None:
    """Beside SameSite=Strict and the token: a POST from another site's page is refused; a client that sends no
    Origin (a script) or this site's own is served."""
    client = _client(review_site, "rita")
    token, page = client.csrf(), review_site.pages["unsure"]
    for origin in ("http://evil.example", "null", review_site.url.replace("127.0.0.1", "localhost")):
        answer = client.post(f"/api/pages/{page}/review", body={"labels": ["AF"]},
                             headers={"X-CSRF-Token": token, "Origin": origin})
        assert answer.status == 403, origin
    assert client.post("/logout", form={"csrf_token": token}, headers={"Origin": "http://evil.example"}).status == 403
    answer = client.post(f"/api/pages/{page}/review", body={"labels": ["AF"]},
                         headers={"X-CSRF-Token": token, "Origin": review_site.url})
    assert answer.status == 201
    with session_scope(review_site.db_url) as session:
        session.execute(delete(Review).where(Review.id == answer.json()["review_id"]))


def test_login_is_throttled_per_client_address(review_site: ReviewSite) -> None:
    for i in range(MAX_PER_ADDRESS):  # a different name each time: only the address ties them together
        assert _from(review_site, "127.0.0.5").login(f"guess-{i}", "guess").status == 401
    locked = _from(review_site, "127.0.0.5").login("ada")
    assert locked.status == 429 and 1 <= int(locked.headers["Retry-After"]) <= WINDOW_S
    other = _from(review_site, "127.0.0.6")  # another client is not locked out by this one
    assert other.login("ada").status == 303 and other.get("/api/me").json()["name"] == "ada"


def test_hostile_review_input_is_refused_or_shown_as_text(review_site: ReviewSite) -> None:
    """Stored markup comes back escaped; ids out of range are 404 or 422; oversized or deeply nested bodies are
    refused with a 4xx, never a 500 or a stack trace."""
    reviewer = _client(review_site, "ada")
    token, page = reviewer.csrf(), review_site.pages["done"]
    markup = '<script>alert(1)</script><img src=x onerror=alert(2)>.pdf'  # a dropped file's name is anyone's
    with session_scope(review_site.db_url) as session:
        session.execute(update(Document).where(Document.sha256 == review_site.shas["done"]).values(path=markup))
    html = reviewer.get(f"/pages/{page}").text
    assert markup not in html and "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    for path, status in (("/api/pages/999999", 404), ("/pages/999999", 404), ("/api/pages/0", 422),
                         ("/api/pages/x", 422), (f"/api/pages/{2**40}", 422), ("/worklist/at/-1", 422)):
        assert reviewer.get(path).status == status, path
    nested = '{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for body in (json.dumps({"labels": [], "comment": "x" * 5000}), json.dumps({"labels": ["MI"] * 100_000}),
                 nested, json.dumps({"labels": [], "comment": "x" * 3_000_000})):
        request = Request(f"{review_site.url}/api/pages/{page}/review", data=body.encode(), method="POST",
                          headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
        try:
            status, text = reviewer.opener.open(request, timeout=120).status, ""
        except HTTPError as error:
            status, text = error.code, error.read().decode("utf-8", "replace")
        assert 400 <= status < 500 and "Traceback" not in text, (status, body[:40], text[:200])


@pytest.fixture(scope="module")
def twin_sites(bundle_dir: Path, review_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReviewSite, str]]:
    """Two `ecg-intake review` processes on one database, with the default proxy settings."""
    with serve_review(tmp_path_factory.mktemp("twins"), bundle_dir, review_env) as site:
        port = free_port()
        second = site.cli.popen("review", "--port", str(port), log=site.home.parent / "second.log")
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and second.poll() is None and not port_open(port):
                time.sleep(0.1)
            assert second.poll() is None and port_open(port), (site.home.parent / "second.log").read_text()
            yield site, f"http://127.0.0.1:{port}"
        finally:
            second.terminate()
            second.wait(timeout=30)


def test_forwarded_for_does_not_dodge_the_address_limit(twin_sites: tuple[ReviewSite, str]) -> None:
    """By default no proxy is trusted: a client that names another address in X-Forwarded-For is still
    counted under its own."""
    site, _ = twin_sites
    client = Http(site.url)
    for i in range(MAX_PER_ADDRESS):
        form = {"name": f"guess-{i}", "password": "guess", "csrf_token": client.form_token()}
        answer = client.post("/login", form=form, headers={"X-Forwarded-For": f"10.0.{i}.1"})
        assert answer.status == 401
    form = {"name": "ada", "password": PASSWORD, "csrf_token": client.form_token()}
    assert client.post("/login", form=form, headers={"X-Forwarded-For": "10.9.9.9"}).status == 429


def test_review_processes_share_the_login_counts(twin_sites: tuple[ReviewSite, str]) -> None:
    """The counts live in the database: failures spread over two server processes add up."""
    site, second = twin_sites
    for i in range(MAX_FAILURES):
        server = site if i % 2 else ReviewSite(second, site.home, site.db_url, site.cli)
        assert _from(server, "127.0.0.2").login("vera", "guess").status == 401
    for url in (site.url, second):
        assert _from(ReviewSite(url, site.home, site.db_url, site.cli), "127.0.0.2").login("vera").status == 429


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
