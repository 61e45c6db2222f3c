"""The review site for the tests: a filled database, the real `ecg-intake review` server on a free port, and a
browser-less HTTP client with its own cookie jar."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, HTTPRedirectHandler, Request, build_opener

import cv2

from ingest.page import Page as DecodedPage
from ingest.preprocess import PREPROCESS_VERSION, Preparation
from model_training.manifest import LABELS
from tests.helpers.cli import Cli
from tests.helpers.inputs import reference_page
from tests.helpers.servers import free_port, port_open
from worker.db import queries
from worker.db.migrate import upgrade
from worker.db.models import Document, ModelVersion, Page, Prediction
from worker.db.session import session_scope
from worker.review.auth import hash_password
from worker.settings import Settings
from worker.waveforms import read_page, record_waveform

PASSWORD = "correct horse battery"
USERS = {"vera": "viewer", "ada": "admin"}  # rita, the reviewer, is added through the CLI
THRESHOLDS = {"MI": 0.4, "AF": 0.6, "STTC": 0.5, "CD": 0.5, "HYP": 0.55}
PAGES = {  # name -> probabilities; "done" is reviewed already, so it is not on the worklist
    "urgent": {"MI": 0.93, "AF": 0.20, "STTC": 0.70, "CD": 0.10, "HYP": 0.30},
    "unsure": {"MI": 0.35, "AF": 0.58, "STTC": 0.48, "CD": 0.52, "HYP": 0.50},
    "calm": {"MI": 0.05, "AF": 0.04, "STTC": 0.10, "CD": 0.08, "HYP": 0.02},
    "done": {"MI": 0.80, "AF": 0.10, "STTC": 0.20, "CD": 0.10, "HYP": 0.10},
}
# As vendor ECG XML stores it (ingest/decode/vendor_xml.py); the "urgent" page's document carries it.
DEVICE_READING = {"vendor_format": "ge-muse",
                  "vendor_measurements": {"heart_rate_bpm": 64, "qrs_ms": 132, "qtc_ms": 441},
                  "vendor_statements": ["Sinus rhythm", "Left bundle branch block"],
                  "derived_leads": ["III", "aVR", "aVL", "aVF"]}
IDENTIFIER = "PAT-47"  # every patient id starts so; the dropped files' names carry a patient name


@dataclass
class ReviewSite:
    """A running review server: its address, data home and database, the CLI on that home, and the filled pages
    (name -> page id) and documents (name -> sha256)."""

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


class NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect comes back as the answer itself


class Http:
    """A browser-less client with its own cookie jar: one per user."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = build_opener(HTTPCookieProcessor(CookieJar()), NoRedirect)

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


def fill_review_database(db_url: str, folder: Path, bundle_dir: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Four predicted pages of one real 12-lead recording, cleaned as intake cleans (the first with its waveform
    read back), and one quarantined file."""
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
            muse = name == "urgent"  # a GE MUSE export carrying the device's reading; the others are PDFs
            extension = "xml" if muse else "pdf"
            document = Document(sha256=shas[name], path=f"/in/cardiology/Doe_John_{i}.{extension}",
                                current_path=f"/archive/Doe_John_{i}.{extension}",
                                source="cardiology" if i % 2 else "er", file_type="ge-muse" if muse else "pdf",
                                status="done", received_at=now - timedelta(hours=i),
                                processed_at=now, source_metadata={"patient_id": f"{IDENTIFIER}{i:02d}",
                                                                   "accession_number": f"ACC-{i:04d}",
                                                                   **(DEVICE_READING if muse else {})})
            page = Page(document=document, page_no=1, image_path=str(cleaned), thumbnail_path=str(thumbnail),
                        preprocess_version=PREPROCESS_VERSION, source=document.source)
            labels = [label for label in LABELS if probabilities[label] >= THRESHOLDS[label]]
            session.add_all([document, page, Prediction(page=page, model_version=version, probabilities=probabilities,
                                                        labels=labels, engine="cpu", latency_ms=5.0)])
            session.flush()
            ids[name] = page.id
            if muse:  # its waveform read back from the drawn page, as the digitise task stores it
                record_waveform(session, read_page(page.id, folder, page.page_no, DecodedPage(
                    reference_page(1600), 1, "cardiology")))
        admin = queries.user_named(session, "ada")
        queries.add_review(session, page_id=ids["done"], reviewer_id=admin.id, labels=["MI"], comment="old MI")
        session.add(Document(sha256="f" * 64, path="/in/er/broken.pdf", current_path="/quarantine/broken.pdf",
                             source="er", status="quarantined", reason="corrupt", received_at=now, processed_at=now))
    return ids, shas


@contextlib.contextmanager
def serve_review(folder: Path, bundle_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[ReviewSite]:
    """A filled database under `folder`/home, the reviewer rita added through the CLI, and `ecg-intake review` on
    a free port with `extra_env` on top of a clean environment; stopped when the block ends."""
    home = folder / "home"
    db_url = Settings(home=home, database_url=None).sqlalchemy_url  # what the server derives from its home
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    env.update({"ECG_INTAKE_HOME": str(home), "ECG_INTAKE_BUNDLE": str(bundle_dir), "ECG_INTAKE_TORCH_THREADS": "1",
                "PYTHONUNBUFFERED": "1", **(extra_env or {})})
    cli = Cli(env, folder)
    (home / "pages").mkdir(parents=True)
    upgrade(db_url)
    pages, shas = fill_review_database(db_url, home / "pages", bundle_dir)
    with review_server(cli, folder) as url:
        yield ReviewSite(url, home, db_url, cli, pages, shas)


@contextlib.contextmanager
def review_server(cli: Cli, folder: Path) -> Iterator[str]:
    """The reviewer rita added through the CLI, then `ecg-intake review` on a free port (its log in `folder`);
    yields its address, stopped when the block ends."""
    added = subprocess.run(cli.command("users", "add", "rita", "--role", "reviewer", "--password-stdin"),
                           input=PASSWORD + "\n", env=cli.env, cwd=cli.cwd, capture_output=True, text=True,
                           timeout=120)
    assert added.returncode == 0, added.stderr
    port = free_port()
    server = cli.popen("review", "--port", str(port), log=folder / "review.log")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None and not port_open(port):
            time.sleep(0.1)
        assert server.poll() is None and port_open(port), (folder / "review.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
