"""Drawing families, the registered ConvNeXt variant and the recipe bench, on real pages and real models."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import wfdb

from ingest.preprocess import preprocess
from model_training.bench.recipe import ARMS, measure_speed, run_recipe_bench, summary_rows
from model_training.model import create_model
from model_training.synth.dataset import write_dataset
from model_training.synth.families import FAMILIES, render_family
from model_training.synth.signals import LABELS, generate_record


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv") as handle:
        return list(csv.DictReader(handle))


def test_each_family_draws_the_same_record_differently() -> None:
    record = generate_record(5)
    pages = {family: render_family(record, 77, family, "none", 100)[0] for family in FAMILIES}
    ours, foreign = pages["ours"], pages["ecgplot"]
    assert ours.dtype == foreign.dtype == np.uint8 and ours.ndim == foreign.ndim == 3
    assert ours.shape != foreign.shape  # ecg_plot sizes its chart from the signal, not from A4 paper
    for image in pages.values():
        dark = (image.min(axis=2) < 100).mean()
        assert 0.002 < dark < 0.3, dark  # traces drawn, page not blacked out
        cleaned = preprocess(image, (128, 176))
        assert (cleaned < 128).mean() > 0.005  # cleaning keeps the foreign traces
    with pytest.raises(ValueError, match="unknown drawing family"):
        render_family(record, 77, "crayon")


def test_dicomplot_prints_the_record_it_was_given() -> None:
    """The DICOM printer draws our signal, not a stock one: a flat record leaves flat traces."""
    record = generate_record(5)
    flat = dataclasses.replace(record, signals=np.zeros_like(record.signals))
    page, style = render_family(record, 78, "dicomplot", "none", 100)
    empty, _ = render_family(flat, 78, "dicomplot", "none", 100)
    assert style.layout.startswith("dicomplot-") and page.shape == empty.shape
    ink = lambda image: (image.min(axis=2) < 80).sum()  # noqa: E731
    assert ink(page) > 1.2 * ink(empty)  # flat lines, text and the grid are ink on both


@pytest.mark.parametrize("family", ["ecgplot", "dicomplot"])
def test_a_family_is_written_with_labels_and_recorded(tmp_path: Path, family: str) -> None:
    write_dataset(tmp_path, 3, ("png",), "light", seed=7, dpi=100, workers=1, family=family)
    rows = _rows(tmp_path)
    assert [r["family"] for r in rows] == [family] * 3
    assert all(r["layout"].startswith(f"{family}-") for r in rows)
    truth = [generate_record(int(r["seed"])).labels for r in rows]
    assert [{label: int(r[label]) for label in LABELS} for r in rows] == truth


def test_signals_only_set_still_writes_its_labels(tmp_path: Path) -> None:
    write_dataset(tmp_path, 4, ("wfdb",), seed=8, workers=1)
    rows = _rows(tmp_path)
    assert len(rows) == 4 and all(r["format"] == "wfdb" for r in rows)
    record = wfdb.rdrecord(str(tmp_path / rows[0]["file"]))
    assert record.n_sig == 12 and record.fs == 500
    assert {label: int(rows[0][label]) for label in LABELS} == generate_record(int(rows[0]["seed"])).labels


def test_convnext_ecg_is_a_timm_model_with_pooling_downsamples() -> None:
    assert "convnext_ecg" in timm.list_models("convnext_ecg")
    model = create_model("convnext_ecg", len(LABELS), 1)
    assert isinstance(model.stem[3], torch.nn.MaxPool2d)
    assert all(isinstance(stage.downsample[0], torch.nn.MaxPool2d) for stage in list(model.stages)[1:])
    strided = create_model("convnext_ecg", len(LABELS), 1, stem="overlap_act", downsample="conv")
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in strided.modules())
    assert model(torch.zeros(2, 1, 64, 96)).shape == (2, len(LABELS))
    with pytest.raises(ValueError, match="downsample"):
        create_model("convnext_ecg", 5, 1, downsample="stride")


def test_recipe_bench_trains_arms_at_equal_pages_and_merges_results(tmp_path: Path) -> None:
    out = tmp_path / "recipe.json"
    run_recipe_bench(["plain_cnn"], train_n=32, val_n=12, epochs=1, size=(64, 96), cache=tmp_path / "cache",
                     json_out=out)
    report = run_recipe_bench(["convnext_ecg"], train_n=32, val_n=12, epochs=1, size=(64, 96),
                              cache=tmp_path / "cache", json_out=out)
    report = run_recipe_bench(["plain_cnn"], train_n=16, val_n=12, epochs=1, size=(64, 96),
                              cache=tmp_path / "cache", json_out=out, train_family="ecgplot")
    arms = {"plain_cnn", "convnext_ecg", "plain_cnn@ecgplot"}  # the held-out family swaps with the trained one
    assert set(json.loads(out.read_text())["arms"]) == arms
    assert "family=ecgplot" in report["arms"]["plain_cnn@ecgplot"]["train"]
    rows = summary_rows(report)
    assert {row["arm"] for row in rows} == arms
    swapped = next(row for row in rows if row["arm"] == "plain_cnn@ecgplot")
    assert swapped["held_out_mean"] == swapped["ours_heavy"]
    for row in rows:
        assert all(0.0 <= row[name] <= 1.0 for name in ("ours_heavy", "ecgplot_clean", "ecgplot_heavy"))
        assert report["arms"][row["arm"]]["history"][0]["pages_seen"] == (16 if "@" in row["arm"] else 32)
    measure_speed(["plain_cnn", "convnext_ecg"], size=(64, 96), batch=4, steps=1, json_out=out)
    speeds = json.loads(out.read_text())["step_seconds"]
    assert speeds["plain_cnn"] > 0 and speeds["convnext_ecg"] > 0 and speeds["batch"] == 4
    assert "plain_cnn" in json.loads(out.read_text())["arms"]  # timing merges into the report, keeps the runs
    with pytest.raises(ValueError, match="unknown arms"):
        run_recipe_bench(["resnet_from_a_hub"], cache=tmp_path / "cache")
    assert "plain_cnn" in ARMS


@pytest.mark.slow
def test_leave_one_family_out_rows_hold_out_each_family(tmp_path: Path) -> None:
    from model_training.bench.families import run_leave_one_family_out

    sources = "".join(
        f'[[{kind}]]\nkind = "synthetic"\nn = {n}\nseed = {seed}\nartifacts = "light"\ndpi = 60\n'
        f'family = "{family}"\n\n'
        for family, base in (("ours", 1), ("ecgplot", 3), ("dicomplot", 5))
        for kind, n, seed in (("data", 8, base), ("validation", 6, base + 1)))
    preset = tmp_path / "tiny.toml"
    preset.write_text(f'name = "tiny"\ninput_size = [64, 96]\ncache_dir = "{tmp_path / "cache"}"\nworkers = 2\n\n'
                      + sources)
    out = tmp_path / "lofo.json"
    report = run_leave_one_family_out(["dicomplot", "ours"], train_pages=12, epochs=1, preset=str(preset),
                                      json_out=out)
    assert json.loads(out.read_text())["rows"].keys() == {"dicomplot", "ours"}
    row = report["rows"]["dicomplot"]
    assert row["trained_on"] == ["ours", "ecgplot"] and row["pages"] == 12
    assert "family=dicomplot" not in row["train"] and "family=ecgplot" in row["train"]
    assert set(row["history"][-1]) >= {"ours", "ecgplot", "dicomplot"}
    assert report["rows"]["ours"]["trained_on"] == ["ecgplot", "dicomplot"]
