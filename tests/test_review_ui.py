"""The review web UI end to end: the real `ecg-intake review` server on a free port, a real SQLite database
with pages cleaned by intake's own preprocessing, headless Chromium through Playwright, and plain HTTP
probes of every route (login, roles, CSRF, patient identifiers, injection, the OpenAPI GETs)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ingest.render import STANDARD_LEADS
from model_training.manifest import LABELS
from tests.helpers.review import DEVICE_READING, IDENTIFIER, PAGES, PASSWORD, THRESHOLDS, Http, ReviewSite
from worker.db import queries
from worker.db.models import Document, Event, Page, Prediction, Review, User
from worker.db.session import session_scope

INJECTIONS = ["' OR '1'='1", "'; DROP TABLE reviews; --", '" OR 1=1 --', "1) UNION SELECT password_hash FROM users --",
              "%' AND 1=1 --", "Robert'); DROP TABLE documents;--", "\\'; DELETE FROM events; --"]


@pytest.fixture(scope="module")
def viewer(review_site: ReviewSite) -> Http:
    client = Http(review_site.url)
    assert client.login("vera").status == 303
    return client


@pytest.fixture(scope="module")
def reviewer(review_site: ReviewSite) -> Http:
    client = Http(review_site.url)
    assert client.login("rita").status == 303
    return client


def _counts(review_site: ReviewSite) -> dict[str, int]:
    with session_scope(review_site.db_url) as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Document, Page, Prediction, Review, User)}


def test_the_session_key_is_made_once_and_kept_private(review_site: ReviewSite) -> None:
    secret = review_site.home / "review-secret"
    assert secret.is_file() and secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_text().strip()) >= 32


def _routes(review_site: ReviewSite) -> list[tuple[str, str]]:
    """Every (method, path) of the routers the app is made of (besides /static), with real ids in the path."""
    from worker.review import api, probes, views

    values = {"page_id": str(review_site.pages["urgent"]), "kind": "cleaned", "position": "0"}
    routes = []
    for route in [*api.router.routes, *views.router.routes, *probes.router.routes]:
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], route.path)
        routes += [(method, path) for method in sorted(route.methods - {"HEAD"})]
    return routes


def test_without_a_session_only_the_login_page_and_the_probes_answer(review_site: ReviewSite) -> None:
    from worker.review.probes import PUBLIC_PATHS

    routes = _routes(review_site)
    assert ("GET", "/api/results") in routes and ("POST", f"/api/pages/{review_site.pages['urgent']}/review") in routes
    assert PUBLIC_PATHS == ("/metrics", "/healthz", "/readyz")  # no patient data: counts, "ok", the database check
    anonymous = Http(review_site.url)
    token = anonymous.form_token()  # an anonymous session with a CSRF token: only the login form needs one
    for method, path in routes:
        if path == "/login":
            continue
        if path in PUBLIC_PATHS:
            assert (method, anonymous.call(method, path).status) == ("GET", 200), path
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


def test_session_cookie_flags(review_site: ReviewSite) -> None:
    answer = Http(review_site.url).get("/login")
    cookie = answer.headers["Set-Cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # http: a setting
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_a_viewer_cannot_review(review_site: ReviewSite, viewer: Http) -> None:
    before = _counts(review_site)["reviews"]
    page_id = review_site.pages["calm"]
    answer = viewer.post(f"/api/pages/{page_id}/review", body={"labels": ["AF"]},
                         headers={"X-CSRF-Token": viewer.csrf()})
    assert answer.status == 403
    form = {"labels": ["AF"], "csrf_token": viewer.csrf(), "comment": ""}
    assert viewer.post(f"/pages/{page_id}/review", form=form).status == 403
    assert _counts(review_site)["reviews"] == before


def test_a_post_without_the_csrf_token_is_refused(review_site: ReviewSite, reviewer: Http) -> None:
    page_id = review_site.pages["calm"]
    before = _counts(review_site)["reviews"]
    assert reviewer.post(f"/api/pages/{page_id}/review", body={"labels": []}).status == 403
    assert reviewer.post(f"/api/pages/{page_id}/review", body={"labels": []},
                         headers={"X-CSRF-Token": "forged"}).status == 403
    assert reviewer.post(f"/pages/{page_id}/review", form={"labels": ["CD"]}).status == 403
    assert reviewer.post(f"/pages/{page_id}/review", form={"labels": ["CD"], "csrf_token": "forged"}).status == 403
    assert Http(review_site.url).post("/login", form={"name": "rita", "password": PASSWORD}).status == 403
    assert _counts(review_site)["reviews"] == before
    answer = reviewer.post(f"/api/pages/{page_id}/review", body={"labels": ["HYP", "CD"], "comment": "api"},
                           headers={"X-CSRF-Token": reviewer.csrf()})
    assert answer.status == 201 and answer.json()["labels"] == ["CD", "HYP"]  # LABELS order
    assert _counts(review_site)["reviews"] == before + 1


def test_sql_injection_in_filters_is_harmless(review_site: ReviewSite, reviewer: Http) -> None:
    before = _counts(review_site)
    for text in INJECTIONS:
        for path, params in (("/api/results", {"source": text}), ("/api/results", {"patient": text}),
                             ("/api/worklist", {"source": text}), ("/worklist", {"source": text})):
            answer = reviewer.get(path, params=params)
            assert answer.status == 200, (path, text, answer.text[:300])
            assert "$argon2" not in answer.text
            if path.startswith("/api/"):
                assert answer.json()["total"] == 0 and answer.json()["items"] == []
    assert _counts(review_site) == before
    assert reviewer.get("/api/results").json()["total"] == before["pages"] + 1  # the quarantined file's row


def test_a_viewer_sees_no_patient_identifiers(review_site: ReviewSite, viewer: Http, reviewer: Http) -> None:
    page_id = review_site.pages["urgent"]
    for path in ("/api/results", "/api/worklist", f"/api/pages/{page_id}", "/worklist", f"/pages/{page_id}"):
        seen = viewer.get(path)
        assert seen.status == 200, path
        assert IDENTIFIER not in seen.text and "ACC-" not in seen.text and "Doe_John" not in seen.text, path
        assert IDENTIFIER in reviewer.get(path).text, path
    detail = viewer.get(f"/api/pages/{page_id}").json()
    row = detail["page"]
    assert "patient_id" not in row and "accession_number" not in row and "path" not in row
    assert detail["device_reading"] == {"format": "ge-muse", "statements": DEVICE_READING["vendor_statements"],
                                        "measurements": {"heart_rate_bpm": 64.0, "qrs_ms": 132.0, "qtc_ms": 441.0},
                                        "derived_leads": ["III", "aVR", "aVL", "aVF"]}
    assert viewer.get(f"/api/pages/{review_site.pages['unsure']}").json()["device_reading"] is None
    assert viewer.get("/api/results", params={"patient": f"{IDENTIFIER}00"}).status == 403
    assert viewer.get(f"/api/pages/{page_id}/images/original").status == 403  # the sheet's printed header
    assert viewer.get(f"/api/pages/{page_id}/images/trace").status == 403  # drawn on the whole sheet
    assert viewer.get(f"/api/pages/{page_id}/images/cleaned").status == 200
    assert reviewer.get(f"/api/pages/{page_id}/images/original").status == 200
    assert reviewer.get(f"/api/pages/{page_id}/images/trace").status == 200
    assert "trace" not in detail["images"] and "trace" in reviewer.get(f"/api/pages/{page_id}").json()["images"]
    waveform = detail["waveform"]
    assert waveform["method"] in ("learned", "classical") and waveform["status"] == "read" and waveform["layout"]
    assert list(waveform["leads"]) == list(STANDARD_LEADS) and set(waveform["measurements"]) == {
        "heart_rate", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "axis_deg"}
    assert 40 < waveform["measurements"]["heart_rate"] < 150
    assert viewer.get(f"/api/pages/{review_site.pages['unsure']}").json()["waveform"] is None


def test_a_viewer_sees_no_review_comment_or_reviewer_name(review_site: ReviewSite, viewer: Http,
                                                          reviewer: Http) -> None:
    done = review_site.pages["done"]
    comment = "phoned Jane Roe, MRN 5521"  # a free-text comment can name the patient
    saved = reviewer.post(f"/api/pages/{done}/review", body={"labels": ["MI"], "comment": comment},
                          headers={"X-CSRF-Token": reviewer.csrf()})
    assert saved.status == 201, saved.text
    for path in ("/api/results", f"/api/pages/{done}", f"/pages/{done}"):
        seen = viewer.get(path)
        assert seen.status == 200, path
        assert "Jane Roe" not in seen.text and "rita" not in seen.text, path
        assert "Jane Roe" in reviewer.get(path).text or not path.startswith("/api/"), path
        assert "rita" in reviewer.get(path).text, path
    row = viewer.get(f"/api/pages/{done}").json()["page"]
    assert "review_comment" not in row and "reviewer" not in row and row["review_labels"] == ["MI"]
    assert reviewer.get(f"/api/pages/{done}").json()["page"]["review_comment"] == comment


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_the_worklist_pages_by_cursor(review_site: ReviewSite, viewer: Http) -> None:
    by_offset = [row["page_id"] for row in viewer.get("/api/worklist", params={"limit": 10}).json()["items"]]
    walked, params = [], {"limit": 1}
    while True:
        answer = viewer.get("/api/worklist", params=params).json()
        walked += [row["page_id"] for row in answer["items"]]
        if answer["next"] is None:
            break
        params["after"] = answer["next"]
    assert walked == by_offset and len(by_offset) >= 2
    first = viewer.get("/api/worklist", params={"limit": 1}).json()["next"]
    assert [row["page_id"] for row in viewer.get("/api/worklist", params={"limit": 1, "after": first, "offset": 1}
                                                 ).json()["items"]] == by_offset[2:]
    html = viewer.get("/worklist", params={"limit": 1}).text
    assert f"after={first}" in html and "start=1" in html
    assert ">2</a>" in viewer.get("/worklist", params={"limit": 1, "after": first, "start": 1}).text
    for tampered in ("abc", "!!", first[:-3], _cursor("[0.5,0.1,1,1]"), _cursor("[1e999,0,1,1,1]"),
                     _cursor('["x",0,1,1,1]'), _cursor("[0.5,0.1,2147483648,1,1]"), _cursor("[true,0,1,1,1]"),
                     _cursor("[0.5,0.1,1.5,1,1]"), _cursor("{}"), "A" * 300):
        for path in ("/api/worklist", "/worklist"):
            answer = viewer.get(path, params={"after": tampered})
            assert answer.status == 422, (path, tampered, answer.status, answer.text[:200])


def test_a_disabled_user_cannot_log_in(review_site: ReviewSite) -> None:
    added = subprocess.run(review_site.cli.command("users", "add", "dora", "--role", "admin", "--password-stdin"),
                           input=PASSWORD + "\n", env=review_site.cli.env, cwd=review_site.cli.cwd, capture_output=True,
                           text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    dora = Http(review_site.url)
    assert dora.login("dora").status == 303
    assert dora.get("/api/me").json()["role"] == "admin"
    assert Http(review_site.url).login("dora", "wrong password").status == 401
    review_site.cli("users", "disable", "dora")
    assert dora.get("/api/me").status == 401  # the open session ends with the next request
    assert Http(review_site.url).login("dora").status == 401
    users = {u["name"]: u for u in json.loads(review_site.cli("users", "list", "--json").stdout)}
    assert users["dora"]["disabled"] and not users["rita"]["disabled"] and users["vera"]["role"] == "viewer"
    with session_scope(review_site.db_url) as session:
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
def test_no_api_get_answers_5xx(review_site: ReviewSite, viewer: Http, reviewer: Http, spec: dict,
                                data: st.DataObject) -> None:
    path, parameters = data.draw(st.sampled_from(_operations(spec)))
    client = data.draw(st.sampled_from([viewer, reviewer]))
    params, filled = {}, path
    for parameter in parameters:
        if parameter["in"] == "path":
            ids = st.sampled_from([str(i) for i in review_site.pages.values()])
            value = data.draw(ids | _strategy(parameter["schema"]))
            filled = filled.replace("{" + parameter["name"] + "}", quote(value, safe="") or "0")
        elif parameter["in"] == "query" and data.draw(st.booleans()):
            params[parameter["name"]] = data.draw(_strategy(parameter["schema"]))
    answer = client.get(filled, params=params)
    assert answer.status < 500, (filled, params, answer.text[:500])


def test_reviewer_corrects_labels_in_the_browser(review_site: ReviewSite, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shots = Path(__file__).resolve().parent.parent / "docs" if os.environ.get("ECG_INTAKE_SCREENSHOTS") == "1" \
        else tmp_path
    urgent, unsure = review_site.pages["urgent"], review_site.pages["unsure"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             headless=True)
        page = browser.new_page(viewport={"width": 1360, "height": 860})
        page.goto(review_site.url + "/worklist")
        assert "/login" in page.url
        page.fill("input[name=name]", "rita")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/worklist")
        first = page.locator("table.worklist tbody tr").first
        assert review_site.shas["urgent"][:12] in first.inner_text()  # high MI probability first
        assert IDENTIFIER in first.inner_text()
        page.screenshot(path=str(shots / "review-worklist.png"), full_page=True)

        first.locator("a.open").click()
        page.wait_for_url(f"**/pages/{urgent}?*")
        reading = page.inner_text("#device-reading")  # the device's own answer beside the model's
        assert "Left bundle branch block" in reading and "132" in reading and "QTc" in reading
        page.wait_for_function("() => { const i = document.getElementById('trace');"
                               " return i.complete && i.naturalWidth > 0; }")  # its leads read back
        measured = page.inner_text("#waveform")
        assert "Heart rate" in measured and "QTc" in measured and "read back from the page" in measured
        assert re.search(r"Heart rate\s+\d+", measured) and page.locator("#waveform li.read").count() >= 6
        assert page.locator("#gradcam").count() == 0  # no empty image until the overlay is asked for
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
        page.goto(review_site.url + "/docs")  # the API reference, drawn from /openapi.json without any CDN
        page.wait_for_selector("section.operation")
        assert "/api/worklist" in page.inner_text("#api-docs")
        browser.close()

    with session_scope(review_site.db_url) as session:
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
    assert list((review_site.home / "gradcam").glob(f"*/{urgent}.png"))


ODD_CHARACTERS = st.characters(min_codepoint=0, max_codepoint=0x10FFFF) | st.sampled_from(
    ["\ud800", "\udc00", "\udfff", "\x00", "\ufeff", "\ufffe", "\uffff", "\U0010ffff", "\u202e"])
ODD_TEXT = st.text(alphabet=ODD_CHARACTERS, max_size=12)


def _raw(form: dict[str, str]) -> dict[str, bytes]:
    """Form values as the bytes a client sends: a lone surrogate as its (invalid) UTF-8 bytes."""
    return {name: value.encode("utf-8", "surrogatepass") for name, value in form.items()}


@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(comment=ODD_TEXT, labels=st.lists(ODD_TEXT | st.sampled_from(LABELS), max_size=3), name=ODD_TEXT)
@example(comment="a\ud800b", labels=[], name="\udfff")
@example(comment="", labels=["M\ud800I"], name="rita\x00")
def test_no_post_answers_5xx(review_site: ReviewSite, reviewer: Http, comment: str, labels: list[str],
                             name: str) -> None:
    """Odd code points in the review POSTs (JSON and form) and the login form: a 4xx or a success, never a 5xx."""
    done = review_site.pages["done"]  # reviewed already: new reviews leave the worklist as it is
    token = reviewer.csrf()
    answers = {
        "api review": reviewer.post(f"/api/pages/{done}/review", body={"labels": labels, "comment": comment},
                                    headers={"X-CSRF-Token": token}),
        "form review": reviewer.post(f"/pages/{done}/review", form=_raw({"comment": comment, "csrf_token": token})),
    }
    stranger = Http(review_site.url)
    answers["login"] = stranger.post("/login", form=_raw({"name": name, "password": comment,
                                                          "csrf_token": stranger.form_token()}))
    for what, answer in answers.items():
        assert answer.status < 500, (what, comment, labels, name, answer.text[:300])
