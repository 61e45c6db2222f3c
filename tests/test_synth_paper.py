"""Paper rendering and artifacts: layouts, determinism, label-blind styling, each artifact really acts."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.decode import DecodeLimits, decode
from ingest.render import GRID_COLOURS, LAYOUTS, PaperStyle, render_paper
from model_training.synth.paper import ARTIFACTS, apply_artifacts, render_page
from model_training.synth.signals import generate_record
from tests.helpers.cli import Cli


@pytest.fixture(scope="module")
def record():
    return generate_record(11, findings={"CD": "lbbb"})


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("paper", ["a4", "letter"])
def test_layouts_and_paper_sizes(record, layout: str, paper: str) -> None:
    style = PaperStyle.named("red", paper, layout=layout, dpi=100)
    image = render_paper(record.signals, record.fs, record.leads, style)
    expected = {"a4": (827, 1169), "letter": (850, 1100)}[paper]
    assert image.shape[:2] == expected
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert (gray < 90).mean() > 0.004  # traces and labels are drawn


def test_grid_colour_none_leaves_only_ink(record) -> None:
    def mid_tones(grid: str) -> float:
        image = render_paper(record.signals, record.fs, record.leads, PaperStyle.named(grid, dpi=100))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return float(((gray > 100) & (gray < 250)).mean())

    assert mid_tones("none") < 0.03 < 0.2 < mid_tones("red")  # only anti-aliased trace edges remain
    assert set(GRID_COLOURS) == {"red", "pink", "green", "blue", "grey", "orange", "purple", "black", "none"}


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_each_artifact_changes_the_page_and_keeps_it_an_image(record, name: str) -> None:
    page = render_paper(record.signals, record.fs, record.leads, PaperStyle(dpi=100))
    out = ARTIFACTS[name](page, 0.9, np.random.default_rng(5))
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape != page.shape or np.abs(out.astype(int) - page.astype(int)).mean() > 0.2


def test_stronger_shadow_is_darker(record) -> None:
    page = render_paper(record.signals, record.fs, record.leads, PaperStyle(dpi=100))
    light = ARTIFACTS["shadow"](page, 0.1, np.random.default_rng(1)).mean()
    heavy = ARTIFACTS["shadow"](page, 1.0, np.random.default_rng(1)).mean()
    assert heavy < light < page.mean()


def test_presets_and_determinism(record) -> None:
    clean, applied = apply_artifacts(np.full((50, 80, 3), 255, np.uint8), "none", np.random.default_rng(0))
    assert applied == () and (clean == 255).all()
    a, style_a = render_page(record, 42, "heavy", dpi=100)
    b, style_b = render_page(record, 42, "heavy", dpi=100)
    assert style_a == style_b and np.array_equal(a, b)
    with pytest.raises(ValueError):
        apply_artifacts(a, "extreme", np.random.default_rng(0))


def test_page_style_does_not_depend_on_the_diagnosis() -> None:
    """The same page seed draws the same style and artifacts for a normal and a pathological record."""
    normal = generate_record(7, findings={})
    sick = generate_record(7, findings={"MI": "anterior_acute", "AF": "fibrillation"})
    for page_seed in range(10):
        assert render_page(normal, page_seed, "heavy", dpi=100)[1] == render_page(sick, page_seed, "heavy", dpi=100)[1]


def test_synth_command_writes_every_format_with_labels(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "set"
    cli("synth", "--n", "6", "--out", str(out), "--formats", "png,jpg,tiff,pdf", "--seed", "5", "--workers", "1",
        "--dpi", "100")
    with open(out / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24 and {r["format"] for r in rows} == {"png", "jpg", "tiff", "pdf"}
    for row in rows:
        file_type, pages = decode(out / row["file"], DecodeLimits(pdf_dpi=100))  # readable by our own intake decoders
        assert file_type.value == {"jpg": "jpeg"}.get(row["format"], row["format"]) and len(pages) == 1
        assert row["seed"] == str(5 * 10_000_000 + int(row["file"][:6]))
    again = tmp_path / "again"
    cli("synth", "--n", "6", "--out", str(again), "--formats", "png", "--seed", "5", "--workers", "1", "--dpi", "100")
    for name in ("000000.png", "000005.png"):
        assert (out / name).read_bytes() == (again / name).read_bytes()
