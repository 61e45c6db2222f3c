"""The review web UI end to end: the real `ecg-intake review` server on a free port, a real SQLite database
with pages cleaned by intake's own preprocessing, headless Chromium through Playwright, and plain HTTP
probes of every route (login, roles, CSRF, patient identifiers, injection, the OpenAPI GETs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, urlencode
from urllib.request import HTTPCookieProcessor, HTTPRedirectHandler, Request, build_opener

import cv2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ingest.page import Page as DecodedPage
from ingest.preprocess import PREPROCESS_VERSION, Preparation
from model_training.manifest import LABELS
from tests.conftest import Cli
from tests.inputs import reference_page
from tests.servers import free_port, port_open
from worker.db import queries
from worker.db.migrate import upgrade
from worker.db.models import Document, Event, ModelVersion, Page, Prediction, Review, User
from worker.db.session import session_scope
from worker.review.auth import hash_password

PASSWORD = "correct horse battery"
USERS = {"vera": "viewer", "ada": "admin"}  # rita, the reviewer, is added through the CLI
THRESHOLDS = {"MI": 0.4, "AF": 0.6, "STTC": 0.5, "CD": 0.5, "HYP": 0.55}
PAGES = {  # name -> probabilities; "done" is reviewed already, so it is not on the worklist
    "urgent": {"MI": 0.93, "AF": 0.20, "STTC": 0.70, "CD": 0.10, "HYP": 0.30},
    "unsure": {"MI": 0.35, "AF": 0.58, "STTC": 0.48, "CD": 0.52, "HYP": 0.50},
    "calm": {"MI": 0.05, "AF": 0.04, "STTC": 0.10, "CD": 0.08, "HYP": 0.02},
    "done": {"MI": 0.80, "AF": 0.10, "STTC": 0.20, "CD": 0.10, "HYP": 0.10},
}
IDENTIFIER = "PAT-47"  # every patient id starts so; the dropped files' names carry a patient name
INJECTIONS = ["' OR '1'='1", "'; DROP TABLE reviews; --", '" OR 1=1 --', "1) UNION SELECT password_hash FROM users --",
              "%' AND 1=1 --", "Robert'); DROP TABLE documents;--", "\\'; DELETE FROM events; --"]


@dataclass
class Site:
    url: str
    home: Path
    db_url: str
    cli: Cli
    pages: dict[str, int] = field(default_factory=dict)
    shas: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect comes back as the answer itself


class Http:
    """A browser-less client with its own cookie jar: one per user."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = build_opener(HTTPCookieProcessor(CookieJar()), _NoRedirect)

    def call(self, method: str, path: str, params: dict | None = None, form: dict | None = None,
             body: Any = None, headers: dict | None = None) -> Answer:
        headers = dict(headers or {})
        data = None
        if form is not None:
            data, headers["Content-Type"] = urlencode(form, doseq=True).encode(), "application/x-www-form-urlencoded"
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        url = self.base + path + (f"?{urlencode(params, doseq=True)}" if params else "")
        try:
            with self.opener.open(Request(url, data=data, method=method, headers=headers), timeout=120) as answer:
                return Answer(answer.status, answer.headers, answer.read())
        except HTTPError as error:
            return Answer(error.code, error.headers, error.read())

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Answer:
        return self.call("POST", path, **kwargs)

    def form_token(self) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', self.get("/login").text).group(1)

    def login(self, name: str, password: str = PASSWORD) -> Answer:
        return self.post("/login", form={"name": name, "password": password, "csrf_token": self.form_token(),
                                         "next": "/worklist"})

    def csrf(self) -> str:
        return self.get("/api/me").json()["csrf_token"]


def _fill(db_url: str, folder: Path, bundle_dir: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Four predicted pages of one real 12-lead recording, cleaned as intake cleans, and one quarantined file."""
    prepared = Preparation(size=(384, 512))(DecodedPage(reference_page(1600), 1, "cardiology"))
    now = datetime.now(UTC)
    ids, shas = {}, {}
    with session_scope(db_url) as session:
        for name, role in USERS.items():
            queries.add_user(session, name=name, password_hash=hash_password(PASSWORD), role=role)
        version = ModelVersion(name="convnext-test@1", bundle_path=str(bundle_dir), status="champion",
                               manifest={"name": "convnext-test", "version": "1", "thresholds": THRESHOLDS})
        session.add(version)
        for i, (name, probabilities) in enumerate(PAGES.items()):
            cleaned, thumbnail = folder / f"{name}.png", folder / f"{name}-thumb.jpg"
            cv2.imwrite(str(cleaned), prepared.model_input)
            cv2.imwrite(str(thumbnail), prepared.thumbnail)
            shas[name] = f"{i + 1:x}" * 64
            document = Document(sha256=shas[name], path=f"/in/cardiology/Doe_John_{i}.pdf",
                                current_path=f"/archive/Doe_John_{i}.pdf", source="cardiology" if i % 2 else "er",
                                file_type="pdf", status="done", received_at=now - timedelta(hours=i),
                                processed_at=now, source_metadata={"patient_id": f"{IDENTIFIER}{i:02d}",
                                                                   "accession_number": f"ACC-{i:04d}"})
            page = Page(document=document, page_no=1, image_path=str(cleaned), thumbnail_path=str(thumbnail),
                        preprocess_version=PREPROCESS_VERSION, source=document.source)
            labels = [label for label in LABELS if probabilities[label] >= THRESHOLDS[label]]
            session.add_all([document, page, Prediction(page=page, model_version=version, probabilities=probabilities,
                                                        labels=labels, engine="cpu", latency_ms=5.0)])
            session.flush()
            ids[name] = page.id
        admin = queries.user_named(session, "ada")
        queries.add_review(session, page_id=ids["done"], reviewer_id=admin.id, labels=["MI"], comment="old MI")
        session.add(Document(sha256="f" * 64, path="/in/er/broken.pdf", current_path="/quarantine/broken.pdf",
                             source="er", status="quarantined", reason="corrupt", received_at=now, processed_at=now))
    return ids, shas


@pytest.fixture(scope="module")
def site(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("review")
    home = folder / "home"
    db_url = f"sqlite:///{home / 'ecg-intake.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    env.update({"ECG_INTAKE_HOME": str(home), "ECG_INTAKE_BUNDLE": str(bundle_dir), "ECG_INTAKE_TORCH_THREADS": "1",
                "PYTHONUNBUFFERED": "1"})
    cli = Cli(env, folder)
    (home / "pages").mkdir(parents=True)
    upgrade(db_url)
    pages, shas = _fill(db_url, home / "pages", bundle_dir)
    added = subprocess.run(cli.command("users", "add", "rita", "--role", "reviewer", "--password-stdin"),
                           input=PASSWORD + "\n", env=env, cwd=folder, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    port = free_port()
    server = cli.popen("review", "--port", str(port), log=folder / "review.log")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None and not port_open(port):
            time.sleep(0.1)
        assert server.poll() is None and port_open(port), (folder / "review.log").read_text()
        yield Site(f"http://127.0.0.1:{port}", home, db_url, cli, pages, shas)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def viewer(site: Site) -> Http:
    client = Http(site.url)
    assert client.login("vera").status == 303
    return client


@pytest.fixture(scope="module")
def reviewer(site: Site) -> Http:
    client = Http(site.url)
    assert client.login("rita").status == 303
    return client


def _counts(site: Site) -> dict[str, int]:
    with session_scope(site.db_url) as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Document, Page, Prediction, Review, User)}


def test_the_session_key_is_made_once_and_kept_private(site: Site) -> None:
    secret = site.home / "review-secret"
    assert secret.is_file() and secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_text().strip()) >= 32


def _routes(site: Site) -> list[tuple[str, str]]:
    """Every (method, path) of the two routers the app is made of (besides /static), with real ids in the path."""
    from worker.review import api, views

    values = {"page_id": str(site.pages["urgent"]), "kind": "cleaned", "position": "0"}
    routes = []
    for route in [*api.router.routes, *views.router.routes]:
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], route.path)
        routes += [(method, path) for method in sorted(route.methods - {"HEAD"})]
    return routes


def test_without_a_session_only_the_login_page_answers(site: Site) -> None:
    routes = _routes(site)
    assert ("GET", "/api/results") in routes and ("POST", f"/api/pages/{site.pages['urgent']}/review") in routes
    anonymous = Http(site.url)
    token = anonymous.form_token()  # an anonymous session with a CSRF token: only the login form needs one
    for method, path in routes:
        if path == "/login":
            continue
        answer = anonymous.call(method, path, headers={"X-CSRF-Token": token} if method == "POST" else None)
        if path.startswith("/api/") or path == "/openapi.json":
            assert answer.status == 401, (method, path, answer.status)
        else:
            assert answer.status == 303 and answer.headers["Location"].startswith("/login"), (method, path)
        if method == "POST":
            assert anonymous.call(method, path).status == 403, (method, path)  # no token at all
    assert anonymous.get("/login").status == 200
    assert anonymous.get("/static/review.css").status == 200
    assert "ecg_review" not in str(anonymous.get("/api/results").headers)  # nothing leaks in a cookie either


def test_session_cookie_flags(site: Site) -> None:
    answer = Http(site.url).get("/login")
    cookie = answer.headers["Set-Cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # http: a setting
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_a_viewer_cannot_review(site: Site, viewer: Http) -> None:
    before = _counts(site)["reviews"]
    page_id = site.pages["calm"]
    answer = viewer.post(f"/api/pages/{page_id}/review", body={"labels": ["AF"]},
                         headers={"X-CSRF-Token": viewer.csrf()})
    assert answer.status == 403
    form = {"labels": ["AF"], "csrf_token": viewer.csrf(), "comment": ""}
    assert viewer.post(f"/pages/{page_id}/review", form=form).status == 403
    assert _counts(site)["reviews"] == before


def test_a_post_without_the_csrf_token_is_refused(site: Site, reviewer: Http) -> None:
    page_id = site.pages["calm"]
    before = _counts(site)["reviews"]
    assert reviewer.post(f"/api/pages/{page_id}/review", body={"labels": []}).status == 403
    assert reviewer.post(f"/api/pages/{page_id}/review", body={"labels": []},
                         headers={"X-CSRF-Token": "forged"}).status == 403
    assert reviewer.post(f"/pages/{page_id}/review", form={"labels": ["CD"]}).status == 403
    assert reviewer.post(f"/pages/{page_id}/review", form={"labels": ["CD"], "csrf_token": "forged"}).status == 403
    assert Http(site.url).post("/login", form={"name": "rita", "password": PASSWORD}).status == 403
    assert _counts(site)["reviews"] == before
    answer = reviewer.post(f"/api/pages/{page_id}/review", body={"labels": ["HYP", "CD"], "comment": "api"},
                           headers={"X-CSRF-Token": reviewer.csrf()})
    assert answer.status == 201 and answer.json()["labels"] == ["CD", "HYP"]  # LABELS order
    assert _counts(site)["reviews"] == before + 1


def test_sql_injection_in_filters_is_harmless(site: Site, reviewer: Http) -> None:
    before = _counts(site)
    for text in INJECTIONS:
        for path, params in (("/api/results", {"source": text}), ("/api/results", {"patient": text}),
                             ("/api/worklist", {"source": text}), ("/worklist", {"source": text})):
            answer = reviewer.get(path, params=params)
            assert answer.status == 200, (path, text, answer.text[:300])
            assert "$argon2" not in answer.text
            if path.startswith("/api/"):
                assert answer.json()["total"] == 0 and answer.json()["items"] == []
    assert _counts(site) == before
    assert reviewer.get("/api/results").json()["total"] == before["pages"] + 1  # the quarantined file's row


def test_a_viewer_sees_no_patient_identifiers(site: Site, viewer: Http, reviewer: Http) -> None:
    page_id = site.pages["urgent"]
    for path in ("/api/results", "/api/worklist", f"/api/pages/{page_id}", "/worklist", f"/pages/{page_id}"):
        seen = viewer.get(path)
        assert seen.status == 200, path
        assert IDENTIFIER not in seen.text and "ACC-" not in seen.text and "Doe_John" not in seen.text, path
        assert IDENTIFIER in reviewer.get(path).text, path
    row = viewer.get(f"/api/pages/{page_id}").json()["page"]
    assert "patient_id" not in row and "accession_number" not in row and "path" not in row
    assert viewer.get("/api/results", params={"patient": f"{IDENTIFIER}00"}).status == 403
    assert viewer.get(f"/api/pages/{page_id}/images/original").status == 403  # the sheet's printed header
    assert viewer.get(f"/api/pages/{page_id}/images/cleaned").status == 200
    assert reviewer.get(f"/api/pages/{page_id}/images/original").status == 200


def test_a_disabled_user_cannot_log_in(site: Site) -> None:
    added = subprocess.run(site.cli.command("users", "add", "dora", "--role", "admin", "--password-stdin"),
                           input=PASSWORD + "\n", env=site.cli.env, cwd=site.cli.cwd, capture_output=True,
                           text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    dora = Http(site.url)
    assert dora.login("dora").status == 303
    assert dora.get("/api/me").json()["role"] == "admin"
    assert Http(site.url).login("dora", "wrong password").status == 401
    site.cli("users", "disable", "dora")
    assert dora.get("/api/me").status == 401  # the open session ends with the next request
    assert Http(site.url).login("dora").status == 401
    users = {u["name"]: u for u in json.loads(site.cli("users", "list", "--json").stdout)}
    assert users["dora"]["disabled"] and not users["rita"]["disabled"] and users["vera"]["role"] == "viewer"
    with session_scope(site.db_url) as session:
        actions = set(session.scalars(select(Event.action).where(Event.actor.in_(["dora"]))))
        assert {"login", "login_failed"} <= actions
        assert session.scalar(select(Event).where(Event.action == "user_disabled")) is not None


@pytest.fixture(scope="module")
def spec(reviewer: Http) -> dict:
    answer = reviewer.get("/openapi.json")
    assert answer.status == 200 and answer.json()["openapi"].startswith("3.")
    return answer.json()


def _operations(spec: dict) -> list[tuple[str, list[dict]]]:
    return [(path, op.get("parameters", [])) for path, ops in spec["paths"].items()
            for method, op in ops.items() if method == "get" and path.startswith("/api/")]


def _schema(schema: dict) -> dict:
    """`X | None` as OpenAPI 3.1 writes it -> X."""
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    return options[0] if options else schema


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


def _strategy(schema: dict) -> st.SearchStrategy[str]:
    """Values the schema allows, and values it does not: every answer must still be below 500."""
    schema = _schema(schema)
    if "enum" in schema:
        valid = st.sampled_from([str(v) for v in schema["enum"]])
    elif schema.get("type") == "integer":
        valid = st.integers(schema.get("minimum", -(2**70)), schema.get("maximum", 2**70)).map(str)
        valid = valid | st.integers().map(str)
    elif schema.get("type") == "number":
        valid = st.floats(allow_nan=True, allow_infinity=True).map(str)
    elif schema.get("format") == "date":
        valid = st.dates().map(lambda d: d.isoformat())
    else:
        valid = TEXT | st.sampled_from(INJECTIONS)
    return valid | TEXT


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_api_get_answers_5xx(site: Site, viewer: Http, reviewer: Http, spec: dict, data: st.DataObject) -> None:
    path, parameters = data.draw(st.sampled_from(_operations(spec)))
    client = data.draw(st.sampled_from([viewer, reviewer]))
    params, filled = {}, path
    for parameter in parameters:
        if parameter["in"] == "path":
            value = data.draw(st.sampled_from([str(i) for i in site.pages.values()]) | _strategy(parameter["schema"]))
            filled = filled.replace("{" + parameter["name"] + "}", quote(value, safe="") or "0")
        elif parameter["in"] == "query" and data.draw(st.booleans()):
            params[parameter["name"]] = data.draw(_strategy(parameter["schema"]))
    answer = client.get(filled, params=params)
    assert answer.status < 500, (filled, params, answer.text[:500])


def test_reviewer_corrects_labels_in_the_browser(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shots = Path(__file__).resolve().parent.parent / "docs" if os.environ.get("ECG_INTAKE_SCREENSHOTS") == "1" \
        else tmp_path
    urgent, unsure = site.pages["urgent"], site.pages["unsure"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             headless=True)
        page = browser.new_page(viewport={"width": 1360, "height": 860})
        page.goto(site.url + "/worklist")
        assert "/login" in page.url
        page.fill("input[name=name]", "rita")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/worklist")
        first = page.locator("table.worklist tbody tr").first
        assert site.shas["urgent"][:12] in first.inner_text()  # high MI probability first
        assert IDENTIFIER in first.inner_text()
        page.screenshot(path=str(shots / "review-worklist.png"), full_page=True)

        first.locator("a.open").click()
        page.wait_for_url(f"**/pages/{urgent}?*")
        page.keyboard.press("g")  # Grad-CAM, computed on demand with the bundle's model
        page.wait_for_function("() => { const i = document.getElementById('gradcam');"
                               " return !i.hidden && i.complete && i.naturalWidth > 0; }", timeout=120_000)
        page.keyboard.press("1")  # MI off
        page.keyboard.press("2")  # AF on
        page.fill("textarea[name=comment]", "irregular rhythm; no Q waves")
        page.locator("h1").click()  # leave the comment field, so keys are shortcuts again
        page.screenshot(path=str(shots / "review-page.png"), full_page=True)
        page.keyboard.press("s")
        page.wait_for_url(f"**/pages/{unsure}?*")  # the next page of the worklist
        page.keyboard.press("a")  # accept the model's labels
        page.wait_for_url(lambda url: f"/pages/{unsure}?" not in url)
        page.goto(site.url + "/docs")  # the API reference, drawn from /openapi.json without any CDN
        page.wait_for_selector("section.operation")
        assert "/api/worklist" in page.inner_text("#api-docs")
        browser.close()

    with session_scope(site.db_url) as session:
        rita = queries.user_named(session, "rita")
        review = session.scalar(select(Review).where(Review.page_id == urgent))
        assert review.reviewer_id == rita.id
        assert review.labels == ["AF", "STTC"] and review.comment == "irregular rhythm; no Q waves"
        accepted = session.scalar(select(Review).where(Review.page_id == unsure))
        assert accepted.labels == [label for label in LABELS if PAGES["unsure"][label] >= THRESHOLDS[label]]
        events = session.execute(select(Event.action, Event.details).where(Event.actor == "rita",
                                                                         Event.page_id == urgent)).all()
        actions = {action for action, _ in events}
        assert {"view_page", "view_image", "review"} <= actions
        saved = next(details for action, details in events if action == "review")
        assert saved["labels"] == ["AF", "STTC"] and saved["model_labels"] == ["MI", "STTC"]
    assert list((site.home / "gradcam").glob(f"*/{urgent}.png"))
