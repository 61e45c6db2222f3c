"""Review UI response times on a large PostgreSQL database: the worklist and a page view.

A fresh database on the given server is filled with `pages` predicted pages (one in five reviewed),
the real app is served by uvicorn on a free port, and each route is requested `requests` times by a
logged-in reviewer; the deep worklist page is asked for by offset and by cursor. The app's own
`Server-Timing` header gives the server time of each answer.
"""

from __future__ import annotations

import json
import random
import re
import socket
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, Request, build_opener

from sqlalchemy import insert

from model_training.manifest import load_manifest
from worker.bench.runs import fresh_postgres_database
from worker.db.migrate import upgrade
from worker.db.models import Document, ModelVersion, Page, Prediction, Review, User
from worker.db.session import get_engine
from worker.settings import Settings

CHUNK = 5000
DEEP = 40_000  # the worklist position the deep-page routes start at (by offset, and by cursor)
REVIEWER = "bench-reviewer"
PASSWORD = "bench-password-1"


def _fill(url: str, pages: int, bundle_dir: Path, seed: int = 0) -> None:
    """Bulk rows as intake and classify write them: one page per document, one prediction each, by a champion
    registered with the bundle's whole manifest (the review app reads the champion's labels from it)."""
    from worker.review.auth import hash_password

    rng = random.Random(seed)
    manifest = load_manifest(bundle_dir)
    labels = list(manifest.labels)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with get_engine(url).begin() as connection:
        model = connection.execute(insert(ModelVersion).returning(ModelVersion.id),
                                   {"name": "bench@000000000000", "bundle_path": str(bundle_dir),
                                    "status": "champion", "manifest": manifest.model_dump(mode="json"), "metrics": {}}
                                   ).scalar_one()
        user = connection.execute(insert(User).returning(User.id),
                                  {"name": REVIEWER, "password_hash": hash_password(PASSWORD),
                                   "role": "reviewer"}).scalar_one()
        for first in range(0, pages, CHUNK):
            ids = range(first, min(first + CHUNK, pages))
            connection.execute(insert(Document), [
                {"id": i + 1, "sha256": f"{i:064x}", "path": f"/in/ward-{i % 7}/ecg-{i}.pdf", "current_path": "-",
                 "source": f"ward-{i % 7}", "size_bytes": 1000, "status": "done",
                 "source_metadata": {"patient_id": f"P{i % 30000}", "accession_number": f"A{i}"},
                 "received_at": start + timedelta(seconds=20 * i)} for i in ids])
            connection.execute(insert(Page), [
                {"id": i + 1, "document_id": i + 1, "page_no": 1, "image_path": "-", "preprocess_version": "3",
                 "source": "pdf"} for i in ids])
            predictions, reviews = [], []
            for i in ids:
                scores = {label: round(rng.betavariate(0.6, 2.5), 4) for label in labels}
                found = [label for label in labels if scores[label] >= 0.5]
                predictions.append({"page_id": i + 1, "model_version_id": model, "probabilities": scores,
                                    "labels": found, "engine": "onnx", "latency_ms": 40.0,
                                    "created_at": start + timedelta(seconds=20 * i + 5)})
                if rng.random() < 0.2:
                    reviews.append({"page_id": i + 1, "reviewer_id": user, "labels": found, "comment": None})
            connection.execute(insert(Prediction), predictions)
            if reviews:
                connection.execute(insert(Review), reviews)
        for table in ("documents", "pages", "predictions", "reviews"):
            connection.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                       f"(SELECT max(id) FROM {table}))")
        connection.exec_driver_sql("ANALYZE")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(settings: Settings) -> tuple[str, object]:
    import uvicorn

    from worker.review.app import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name="review-bench", daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the review server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def _server_ms(opener, url: str) -> float:
    with opener.open(Request(url), timeout=60) as answer:
        answer.read()
        timing = answer.headers["Server-Timing"]
    return float(re.search(r"dur=([\d.]+)", timing).group(1))


def _deep_cursor(opener, base: str, position: int) -> str:
    """The worklist cursor whose next page starts at `position`: the `next` of the one row before it."""
    with opener.open(Request(f"{base}/api/worklist?limit=1&offset={position - 1}"), timeout=60) as answer:
        return json.loads(answer.read())["next"]


def _summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"requests": len(times), "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 1), "max_ms": round(ordered[-1], 1)}


def bench_review(server_url: str, pages: int = 100_000, requests: int = 30, seed: int = 0) -> dict:
    """Server time (ms) per route with `pages` predictions in a fresh PostgreSQL database on `server_url`."""
    rng = random.Random(seed)
    with fresh_postgres_database(server_url) as url, tempfile.TemporaryDirectory() as home:
        upgrade(url)
        started = time.perf_counter()
        settings = Settings(home=Path(home), database_url=url)
        _fill(url, pages, settings.bundle_dir, seed)
        fill_s = time.perf_counter() - started
        base, server = _serve(settings)
        try:
            opener = build_opener(HTTPCookieProcessor(CookieJar()))
            with opener.open(f"{base}/login", timeout=60) as answer:
                token = re.search(r'name="csrf_token" value="([^"]+)"', answer.read().decode()).group(1)
            form = urlencode({"name": REVIEWER, "password": PASSWORD, "csrf_token": token, "next": "/worklist"})
            opener.open(Request(f"{base}/login", data=form.encode()), timeout=60).read()
            deep = min(DEEP, pages * 2 // 5)
            cursor = _deep_cursor(opener, base, deep)
            routes = {
                "api_worklist": lambda: f"{base}/api/worklist?limit=50",
                "worklist_html": lambda: f"{base}/worklist",
                "worklist_filtered": lambda: f"{base}/api/worklist?limit=50&label=AF&above=0.5&source=ward-3",
                "worklist_deep_page": lambda: f"{base}/api/worklist?limit=50&offset={deep}",
                "worklist_deep_cursor": lambda: f"{base}/api/worklist?limit=50&after={cursor}",
                "api_page": lambda: f"{base}/api/pages/{rng.randint(1, pages)}",
                "page_html": lambda: f"{base}/pages/{rng.randint(1, pages)}",
            }
            results = {}
            for name, route in routes.items():
                _server_ms(opener, route())  # warm-up: plans and caches
                results[name] = _summary([_server_ms(opener, route()) for _ in range(requests)])
        finally:
            server.should_exit = True
    return {"benchmark": "review", "pages": pages, "predictions": pages, "reviewed_share": 0.2,
            "fill_seconds": round(fill_s, 1), "database": "postgresql", "deep_position": deep, "routes": results}
