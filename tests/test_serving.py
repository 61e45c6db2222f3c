"""One owner of what serves: a champion promoted mid-run, with another input size and other labels, is served
end to end (intake, classify, the database, the review UI, the export), and a bundle that could not be is
refused at promotion."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from ingest.decode.isolated import Decoder
from ingest.watch import Inbox, claim
from model_training.bundle import create_untrained_bundle
from model_training.manifest import LABELS, MANIFEST, load_manifest
from tests.helpers.cli import Cli
from tests.helpers.inputs import reference_page
from tests.helpers.review import Http, review_server
from worker import serving, tasks
from worker.db.migrate import upgrade
from worker.db.models import Document, ModelVersion, Page, Prediction
from worker.db.session import session_scope
from worker.intake import intake
from worker.settings import get_settings

SIZE_A, SIZE_B = (256, 352), (192, 256)
LABELS_B = ("AF", "LVH", "BRADY")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bundles")
    create_untrained_bundle(folder / "a", input_size=SIZE_A)
    create_untrained_bundle(folder / "b", input_size=SIZE_B, seed=1, labels=LABELS_B)
    return folder / "a", folder / "b"


@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundles: tuple[Path, Path]) -> Cli:
    """Settings for this process and the CLI alike: bundle A configured, the registry asked on every task."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    env.update({"ECG_INTAKE_HOME": str(tmp_path / "home"), "ECG_INTAKE_BUNDLE": str(bundles[0]),
                "ECG_INTAKE_ENGINE": "cpu", "ECG_INTAKE_CHAMPION_CHECK_SECONDS": "0",
                "ECG_INTAKE_TORCH_THREADS": "1", "ECG_INTAKE_DECODE_ISOLATION": "false"})
    for key, value in env.items():
        if key.startswith("ECG_INTAKE_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_settings().ensure_dirs()
    upgrade(get_settings().sqlalchemy_url)
    yield Cli(env, tmp_path)
    get_settings.cache_clear()


def _drop_and_intake(inbox: Path, name: str, width: int, decoder: Decoder) -> str:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    cv2.imwrite(str(path), reference_page(width))  # another width: other bytes, another document
    found = intake(get_settings(), claim(path, Inbox(inbox, "ward")), decoder)
    assert found is not None and found.status == "decoded", found
    return found.sha256


def _served(db_url: str) -> dict[str, dict]:
    """Per document: its model, the stored model inputs' shapes and preparation keys, the predicted labels."""
    found: dict[str, dict] = {}
    with session_scope(db_url) as session:
        for document in session.scalars(select(Document)):
            rows = session.execute(select(Page, Prediction, ModelVersion)
                                   .join(Prediction, Prediction.page_id == Page.id)
                                   .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
                                   .where(Page.document_id == document.id)).all()
            found[document.path] = {
                "status": document.status,
                "models": {model.bundle_path for _, _, model in rows},
                "shapes": {cv2.imread(page.image_path, cv2.IMREAD_GRAYSCALE).shape for page, _, _ in rows},
                "keys": {page.preparation for page, _, _ in rows},
                "labels": {tuple(prediction.probabilities) for _, prediction, _ in rows},
                "page_ids": [page.id for page, _, _ in rows],
            }
    return found


def test_a_champion_promoted_mid_run_is_served_with_its_geometry_and_labels(
        installation: Cli, bundles: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a_dir, b_dir = bundles
    manifest_a, manifest_b = load_manifest(a_dir), load_manifest(b_dir)
    settings = get_settings()
    inbox = tmp_path / "inbox"
    decoder = Decoder(settings.decode_limits(), isolated=False)

    first = _drop_and_intake(inbox, "first.jpg", 1400, decoder)  # prepared for A and classified by A
    assert tasks.classify_document(first) == 1
    second = _drop_and_intake(inbox, "second.jpg", 1300, decoder)  # prepared for A, waits for the classifier
    assert serving.champion(settings).preparation.key == manifest_a.preparation.key

    promoted = installation("model", "promote", str(b_dir))
    assert "is champion" in promoted.stdout + promoted.stderr
    with caplog.at_level(logging.INFO, logger="worker.classify"):
        assert tasks.classify_document(second) == 1  # classified by B: its pages made again for B first
    assert "preparing them again" in caplog.text
    third = _drop_and_intake(inbox, "third.jpg", 1200, decoder)  # prepared for B from the start
    assert tasks.classify_document(third) == 1
    assert serving.champion(settings).manifest.labels == list(LABELS_B)

    served = _served(settings.sqlalchemy_url)
    by_name = {Path(path).name: value for path, value in served.items()}
    a_side = {"models": {str(a_dir.resolve())}, "shapes": {SIZE_A}, "keys": {manifest_a.preparation.key},
              "labels": {tuple(LABELS)}}
    b_side = {"models": {str(b_dir.resolve())}, "shapes": {SIZE_B}, "keys": {manifest_b.preparation.key},
              "labels": {LABELS_B}}
    for name, expected in (("first.jpg", a_side), ("second.jpg", b_side), ("third.jpg", b_side)):
        got = by_name[name]
        assert got["status"] == "done", name
        assert {key: got[key] for key in expected} == expected, name
    archived = sorted(p.name.split("__", 1)[1] for p in settings.archive_dir.rglob("*.jpg"))
    assert archived == ["first.jpg", "second.jpg", "third.jpg"]  # nothing lost on the way

    # The export: the serving labels' columns first, then those only the older model read; each row filled
    # for the labels of the model that read it.
    out = tmp_path / "export.csv"
    installation("export", "--format", "csv", "--out", str(out))
    with open(out, newline="") as handle:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
        header = list(rows["first.jpg"])
    probability_columns = [name for name in header if name.startswith("p_")]
    assert probability_columns == ["p_af", "p_lvh", "p_brady", "p_mi", "p_sttc", "p_cd", "p_hyp"]
    assert rows["first.jpg"]["p_mi"] and not rows["first.jpg"]["p_lvh"]
    assert rows["second.jpg"]["p_lvh"] and rows["second.jpg"]["p_brady"] and not rows["second.jpg"]["p_mi"]
    shown = json.loads(installation("results", "--format", "json", "--label", "lvh").stdout)
    assert {Path(row["path"]).name for row in shown} <= {"second.jpg", "third.jpg"}
    assert all(list(row["probabilities"]) == list(LABELS_B) for row in shown)

    # The review UI: each page shown and reviewed with its model's labels; the worklist has a column for each.
    with review_server(installation, tmp_path) as url:
        http = Http(url)
        assert http.login("rita").status == 303
        a_page, b_page = by_name["first.jpg"]["page_ids"][0], by_name["second.jpg"]["page_ids"][0]
        detail_b = http.get(f"/api/pages/{b_page}").json()
        assert detail_b["labels"] == list(LABELS_B)
        assert list(detail_b["page"]["probabilities"]) == list(LABELS_B)
        assert set(detail_b["thresholds"]) == set(LABELS_B)
        detail_a = http.get(f"/api/pages/{a_page}").json()
        assert detail_a["labels"][:5] == list(LABELS) and detail_a["page"]["model_version"] == manifest_a.model_version
        worklist = http.get("/worklist").text
        assert all(f'<th class="num">{label}</th>' in worklist for label in (*LABELS_B, "MI", "HYP"))
        page_html = http.get(f"/pages/{b_page}").text
        assert 'value="LVH"' in page_html and 'value="MI"' not in page_html
        token = http.csrf()
        saved = http.post(f"/api/pages/{b_page}/review", body={"labels": ["LVH"]}, headers={"X-CSRF-Token": token})
        assert saved.status == 201 and saved.json()["labels"] == ["LVH"]
        refused = http.post(f"/api/pages/{b_page}/review", body={"labels": ["STTC"]},
                            headers={"X-CSRF-Token": token})
        assert refused.status == 422 and "STTC" in refused.text
        overlay = http.get(f"/api/pages/{b_page}/images/gradcam")  # explained by the model that read the page
        assert overlay.status == 200
        image = cv2.imdecode(np.frombuffer(overlay.body, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == SIZE_B


def test_promotion_refuses_a_bundle_the_service_could_not_carry(installation: Cli, bundles: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    """Labels that cannot name a column, and an input too small for the backbone, are refused with the reason;
    the champion stays."""
    before = serving.champion(get_settings()).model_version_id
    for change, reason in (({"labels": ["MI", "MI"]}, "repeats a label"),
                           ({"labels": ["ST elevation"]}, "are not names"),
                           ({"input_size": [32, 48]}, "below 64 px")):
        bad = tmp_path / f"bad-{len(reason)}"
        bad.mkdir()
        for item in bundles[0].iterdir():
            (bad / item.name).write_bytes(item.read_bytes())
        manifest = json.loads((bad / MANIFEST).read_text())
        manifest.update(change, version=f"bad{len(reason)}")
        (bad / MANIFEST).write_text(json.dumps(manifest))
        refused = installation("model", "promote", str(bad), check=False)
        assert refused.returncode == 2 and reason in refused.stdout + refused.stderr, refused
    assert serving.champion(get_settings()).model_version_id == before
